"""Settings and the teams file: a wrong file fails at start naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import DEFAULT_DATABASE_URL, Settings, normalise_database_url
from bot.teams import load_teams

GOOD_YAML = """\
accounts:
  - id: "111122223333"
    name: payments-prod
    role_arn: arn:aws:iam::111122223333:role/PareReader
    sources: [last_used, cloudtrail]
    cloudtrail: {bucket: org-trail, prefix: AWSLogs}
  - id: "444455556666"
    sources: [last_used]
teams:
  - name: payments
    channel: C0PAYMENTS
    champions: [U0ALICE, U0BOB]
    timezone: Europe/Berlin
    digest: {day: Monday, hour: 9}
    match:
      tags: {team: payments}
      accounts: ["111122223333"]
  - name: search
    channel: C0SEARCH
    champions: [U0CAROL]
    timezone: America/New_York
    digest: {day: daily, hour: 8}
    match: {names: ["search-*"]}
admins: [U0ADMIN]
fallback_team: payments
leaderboard_channel: C0LEADERS
"""

GOOD_TOML = """\
admins = ["U0ADMIN"]
fallback_team = "payments"
leaderboard_channel = "C0LEADERS"

[[accounts]]
id = "111122223333"
name = "payments-prod"
role_arn = "arn:aws:iam::111122223333:role/PareReader"
sources = ["last_used", "cloudtrail"]
cloudtrail = { bucket = "org-trail", prefix = "AWSLogs" }

[[accounts]]
id = "444455556666"
sources = ["last_used"]

[[teams]]
name = "payments"
channel = "C0PAYMENTS"
champions = ["U0ALICE", "U0BOB"]
timezone = "Europe/Berlin"
digest = { day = "Monday", hour = 9 }
match = { tags = { team = "payments" }, accounts = ["111122223333"] }

[[teams]]
name = "search"
channel = "C0SEARCH"
champions = ["U0CAROL"]
timezone = "America/New_York"
digest = { day = "daily", hour = 8 }
match = { names = ["search-*"] }
"""

TEAM = """\
teams:
  - name: payments
    channel: {channel}
    champions: {champions}
    timezone: {timezone}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def team_file(tmp_path: Path, **overrides: str) -> Path:
    fields = {"channel": "C0PAYMENTS", "champions": "[U0ALICE]", "timezone": "UTC", **overrides}
    return write(tmp_path, "teams.yaml", TEAM.format(**fields))


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_teams(path)
    return str(caught.value)


def test_a_good_yaml_file_and_its_toml_twin_parse_the_same(tmp_path):
    from_yaml = load_teams(write(tmp_path, "teams.yaml", GOOD_YAML))
    from_toml = load_teams(write(tmp_path, "teams.toml", GOOD_TOML))

    assert from_yaml == from_toml
    payments = from_yaml.team("payments")
    assert (payments.timezone, payments.digest.day, payments.digest.hour) == (
        "Europe/Berlin",
        "monday",
        9,
    )
    assert from_yaml.owner_of("444455556666", "search-indexer", {}) == "search"
    assert from_yaml.owner_of("444455556666", "batch", {"team": "payments"}) == "payments"


def test_a_bad_time_zone_is_named_with_its_field(tmp_path):
    path = team_file(tmp_path, timezone="Europe/Atlantis")

    message = refusal(path)

    assert message.startswith(f"{path}: teams[0].timezone:")
    assert "Europe/Atlantis" in message


def test_a_bad_channel_id_is_named_with_its_field(tmp_path):
    path = team_file(tmp_path, channel="'#payments'")

    assert refusal(path).startswith(f"{path}: teams[0].channel: '#payments' is not a Slack")


def test_a_team_without_champions_is_refused(tmp_path):
    missing = write(tmp_path, "missing.yaml", "teams:\n  - {name: payments, channel: C0PAY}\n")
    empty = team_file(tmp_path, champions="[]")

    assert refusal(missing).startswith(f"{missing}: teams[0].champions:")
    assert refusal(empty).startswith(f"{empty}: teams[0].champions:")


def test_a_champion_that_is_not_a_user_id_is_refused(tmp_path):
    path = team_file(tmp_path, champions="[alice]")

    assert refusal(path).startswith(f"{path}: teams[0].champions:")


def test_an_unknown_fallback_team_is_refused(tmp_path):
    path = write(
        tmp_path,
        "teams.yaml",
        GOOD_YAML.replace("fallback_team: payments", "fallback_team: billing"),
    )

    message = refusal(path)

    assert message.startswith(str(path))
    assert "fallback_team 'billing' is not one of the teams" in message


def test_a_duplicate_team_is_refused(tmp_path):
    path = write(tmp_path, "teams.yaml", GOOD_YAML.replace("name: search", "name: payments"))

    message = refusal(path)

    assert message.startswith(str(path))
    assert "repeated: ['payments']" in message


def test_a_bad_digest_day_is_named_with_its_field(tmp_path):
    path = write(tmp_path, "teams.yaml", GOOD_YAML.replace("day: daily", "day: someday"))

    assert refusal(path).startswith(f"{path}: teams[1].digest.day:")


def test_broken_yaml_syntax_names_the_file(tmp_path):
    path = write(tmp_path, "teams.yaml", "teams:\n  - name: payments\n   channel: [C0PAY\n")

    assert refusal(path).startswith(f"{path}: not valid YAML")


def test_broken_toml_syntax_names_the_file(tmp_path):
    path = write(tmp_path, "teams.toml", '[[teams]]\nname = "payments\n')

    assert refusal(path).startswith(f"{path}: not valid TOML")


def test_a_missing_file_names_the_file_and_the_variable(tmp_path):
    path = tmp_path / "nowhere.yaml"

    message = refusal(path)

    assert message.startswith(str(path))
    assert "PARE_TEAMS_FILE" in message


def test_an_unknown_field_is_refused_rather_than_ignored(tmp_path):
    path = write(tmp_path, "teams.yaml", GOOD_YAML.replace("timezone: Europe/Berlin", "tz: Berlin"))

    assert refusal(path).startswith(f"{path}: teams[0].tz:")


# Settings from the environment


@pytest.fixture
def environment(tmp_path, monkeypatch):
    """An environment with no Pare variables and no .env file in the working directory."""
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "SLACK_API_URL",
        "DATABASE_URL",
        "PARE_TEAMS_FILE",
        "PARE_WINDOW_DAYS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.mark.parametrize(
    "given,expected",
    [
        (
            "postgres://pare:pw@127.0.0.1:5432/pare",
            "postgresql+psycopg://pare:pw@127.0.0.1:5432/pare",
        ),
        ("postgresql://pare@127.0.0.1/pare", "postgresql+psycopg://pare@127.0.0.1/pare"),
        ("postgresql+psycopg://pare@127.0.0.1/pare", "postgresql+psycopg://pare@127.0.0.1/pare"),
        ("sqlite:///pare.db", "sqlite:///pare.db"),
    ],
)
def test_database_urls_are_normalised_for_psycopg(given, expected):
    assert normalise_database_url(given) == expected


def test_settings_normalise_database_url_from_the_environment(environment):
    environment.setenv("DATABASE_URL", " postgres://pare@127.0.0.1:5432/pare ")

    assert Settings().database_url == "postgresql+psycopg://pare@127.0.0.1:5432/pare"


def test_defaults_need_no_environment(environment):
    settings = Settings()

    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.window_days == 90
    assert settings.slack_bot_token is None


def test_secrets_never_appear_in_the_repr_of_settings(environment):
    secrets = {
        "SLACK_BOT_TOKEN": "xoxb-1111-2222-abcdefsecret",
        "SLACK_SIGNING_SECRET": "8f14e45fceea167a5a36dedd4bea2543",
        "SLACK_APP_TOKEN": "xapp-1-A111-secretsecret",
    }
    for name, value in secrets.items():
        environment.setenv(name, value)

    settings = Settings()
    shown = repr(settings) + str(settings) + repr(settings.model_dump())

    for value in secrets.values():
        assert value not in shown
    assert settings.require_slack() == (secrets["SLACK_BOT_TOKEN"], secrets["SLACK_SIGNING_SECRET"])


def test_a_placeholder_secret_is_refused_at_start(environment):
    environment.setenv("SLACK_SIGNING_SECRET", "changeme")

    with pytest.raises(ValueError, match="placeholder"):
        Settings()


def test_the_teams_file_is_read_from_the_configured_path(environment, tmp_path):
    environment.setenv("PARE_TEAMS_FILE", str(write(tmp_path, "org.toml", GOOD_TOML)))

    assert [team.name for team in Settings().teams.teams] == ["payments", "search"]


def test_a_missing_teams_file_fails_when_settings_are_read(environment, tmp_path):
    environment.setenv("PARE_TEAMS_FILE", str(tmp_path / "absent.yaml"))

    with pytest.raises(ConfigError, match="absent.yaml: teams file not found"):
        _ = Settings().teams


# -- input a careless or hostile editor writes ---------------------------------------------


def test_unquoted_account_ids_that_yaml_misreads_are_refused(tmp_path):
    # YAML 1.1 reads 012345670123 as octal and 1:2:3 as base 60; neither is what was written.
    for written in ("012345670123", "1:2:3"):
        path = write(tmp_path, "teams.yaml", GOOD_YAML.replace('"444455556666"', written))
        message = refusal(path)
        assert "accounts[1].id" in message and "write account ids in quotes" in message
    # An unquoted id without a leading zero is read exactly, so it is accepted.
    path = write(tmp_path, "teams.yaml", GOOD_YAML.replace('"444455556666"', "444455556666"))
    assert load_teams(path).accounts[1].id == "444455556666"


def test_a_key_written_twice_is_refused_not_silently_overwritten(tmp_path):
    twice = GOOD_YAML.replace("admins: [U0ADMIN]", "admins: [U0ADMIN]\nadmins: [U0OTHER]")
    assert "the key 'admins' appears twice" in refusal(write(tmp_path, "teams.yaml", twice))
    json_twice = '{"teams": [], "teams": []}'
    assert "appears twice" in refusal(write(tmp_path, "teams.json", json_twice))


def test_ids_with_a_trailing_newline_are_refused(tmp_path):
    path = team_file(tmp_path, champions='["U0ALICE\\n"]')
    assert "is not a Slack user id" in refusal(path)


def test_admins_and_the_leaderboard_channel_are_checked(tmp_path):
    bad_admin = GOOD_YAML.replace("admins: [U0ADMIN]", "admins: [alice]")
    assert "admins: 'alice' is not a Slack user id" in refusal(
        write(tmp_path, "teams.yaml", bad_admin)
    )
    bad_board = GOOD_YAML.replace("leaderboard_channel: C0LEADERS", "leaderboard_channel: x")
    assert "leaderboard_channel: 'x' is not a Slack channel id" in refusal(
        write(tmp_path, "teams.yaml", bad_board)
    )


def test_unreadable_encodings_and_deep_nesting_get_one_line(tmp_path):
    latin = tmp_path / "teams.yaml"
    latin.write_bytes("teams:\n  - name: caf\u00e9\n".encode("latin-1"))
    assert "not UTF-8 text" in refusal(latin)

    deep = write(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in refusal(deep)

    with_bom = write(tmp_path, "bom.yaml", "\ufeff" + GOOD_YAML)
    assert load_teams(with_bom).team("payments").channel == "C0PAYMENTS"


def test_a_file_without_teams_is_refused(tmp_path):
    assert "lists no teams" in refusal(write(tmp_path, "teams.yaml", ""))
