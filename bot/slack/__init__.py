"""Everything Pare says to Slack: the client, Block Kit builders, wording and the Bolt app."""
