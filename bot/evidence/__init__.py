"""Evidence of use: what says whether a grant was used, turned into UsageEvidence."""
