"""Pare's one boundary with AWS: only this package imports boto3 and botocore.

`export` builds principals from authorization-details JSON and needs no boto3, so `pare
analyze` works without it; the other modules read live accounts.
"""
