"""Access Analyzer's recommended policies, as removal uses them (the AWS Security Blog example)."""

from __future__ import annotations

import json

from bot.evidence.access_analyzer import recommended_policies

EXAMPLE = (
    "aws_api_responses/aws-docs-and-blog-examples/"
    "get_finding_recommendation_unused_permission__aws-security-blog-2024-09-18.json"
)


def test_create_steps_become_documents_keyed_by_the_policy_they_replace(realdata):
    recommendation = json.loads((realdata / EXAMPLE).read_text())
    documents = recommended_policies(recommendation)

    # The example detaches AmazonBedrockReadOnly outright and trims two others.
    assert set(documents) == {
        "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",
        "InlinePolicyListLambda",
    }
    s3 = documents["arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"]
    assert "s3:ListAllMyBuckets" in s3["Statement"][0]["Action"]
    lam = documents["InlinePolicyListLambda"]["Statement"][0]
    assert lam["Condition"] == {"NotIpAddress": {"aws:SourceIp": "198.51.100.54/32"}}


def test_unfinished_or_broken_recommendations_give_nothing(realdata):
    recommendation = json.loads((realdata / EXAMPLE).read_text())
    assert recommended_policies(dict(recommendation, status="IN_PROGRESS")) == {}
    broken = json.loads(json.dumps(recommendation))
    for step in broken["recommendedSteps"]:
        item = step["unusedPermissionsRecommendedStep"]
        if "recommendedPolicy" in item:
            item["recommendedPolicy"] = "{not json"
    assert recommended_policies(broken) == {}
    assert recommended_policies(None) == {}
