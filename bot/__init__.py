"""Pare: keeps AWS permissions shrinking, team by team, from Slack."""
