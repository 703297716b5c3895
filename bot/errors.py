"""Domain errors: each names what it is about so one handler can explain it."""


class PareError(Exception):
    """Base of every error Pare explains to a user or operator."""


class ConfigError(PareError):
    """The settings or the teams file are wrong; the message names the file and field."""


class UnknownTeam(PareError):
    """A team name that the teams file does not list."""

    def __init__(self, name: str):
        super().__init__(f"no team named {name!r} in the teams file")
        self.name = name


class NotAChampion(PareError):
    """A user tried to decide a finding of a team they are not a champion of."""

    def __init__(self, user_id: str, team: str, champions: list[str]):
        super().__init__(f"user {user_id} is not a champion of team {team}")
        self.user_id = user_id
        self.team = team
        self.champions = champions


class AwsReadError(PareError):
    """AWS refused or failed a read; names the account and, where known, the principal."""

    def __init__(self, account_id: str, what: str, code: str, principal: str | None = None):
        where = f" for {principal}" if principal else ""
        super().__init__(f"account {account_id}: {what}{where} failed: {code}")
        self.account_id = account_id
        self.what = what
        self.code = code
        self.principal = principal


class FindingNotFound(PareError):
    """A button or command referred to a finding that does not exist."""
