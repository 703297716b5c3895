"""Guards moto lacks: Pare never relies on AWS refusing a delete it should not make."""

from __future__ import annotations

import json

import pytest

from bot.aws.iam_write import IamWriteError, IamWriter
from bot.removal import policy as P
from tests.removal.conftest import ACCOUNT, World

DOC = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


def test_an_attached_policy_is_never_deleted_though_moto_would(world: World) -> None:
    world.role("app")
    arn = world.iam.create_policy(PolicyName="shared", PolicyDocument=json.dumps(DOC))
    arn = arn["Policy"]["Arn"]
    world.iam.attach_role_policy(RoleName="app", PolicyArn=arn)

    with pytest.raises(IamWriteError, match="DeleteConflict") as refused:
        IamWriter(world.iam, ACCOUNT).call("delete_policy", {"arn": arn})

    assert refused.value.policy == arn and refused.value.account_id == ACCOUNT
    assert world.iam.get_policy(PolicyArn=arn)["Policy"]["AttachmentCount"] == 1


def test_a_role_with_policies_left_is_never_deleted(world: World) -> None:
    world.role("app")
    world.iam.put_role_policy(RoleName="app", PolicyName="p", PolicyDocument=json.dumps(DOC))

    with pytest.raises(IamWriteError, match="DeleteConflict"):
        IamWriter(world.iam, ACCOUNT).call("delete_role", {"principal": "app"})

    assert world.iam.get_role(RoleName="app")


def test_a_role_with_no_inline_room_is_quarantined_with_aws_deny_all(world: World) -> None:
    world.role("old-job", in_use=False)
    # Fill the role's inline quota so the deny-all statement cannot be added inline.
    filler = {"Version": "2012-10-17", "Statement": []}
    sid = 0
    while P.size(filler) < P.INLINE_LIMITS["role"] - 60:
        filler["Statement"].append(
            {"Sid": f"S{sid}", "Effect": "Deny", "Action": "ec2:RunInstances", "Resource": "*"}
        )
        sid += 1
    filler["Statement"].pop()
    world.iam.put_role_policy(
        RoleName="old-job", PolicyName="big", PolicyDocument=json.dumps(filler)
    )
    world.scan()
    world.approve("old-job", "unused_role")

    report = world.apply()

    assert report.results[0].status == "applied", report.summary()
    attached = world.iam.list_attached_role_policies(RoleName="old-job")["AttachedPolicies"]
    assert [a["PolicyName"] for a in attached] == ["AWSDenyAll"]
