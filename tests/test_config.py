"""Configuration: every problem named with its key path; unknown keys refused; exit 78 from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relinsights.cli import app, example_config_text
from relinsights.config import EX_CONFIG, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
GOOD = {
    "name": "contoso",
    "tenant_id": "contoso.onmicrosoft.com",
    "client_id": "00000000-0000-0000-0000-000000000001",
    "credential": {"secret_env": "X"},
}


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.toml")
    return info.value.problems


def test_example_config_is_valid_and_shipped_copy_matches() -> None:
    assert (ROOT / "config" / "relinsights.example.toml").read_text() == example_config_text()
    cfg = load_config(ROOT / "config" / "relinsights.example.toml")
    t = cfg.tenants[0]
    assert t.sync.exclude_folders == ["deleteditems", "junkemail", "drafts", "outbox", "syncissues"]
    assert t.kpi.response_window_hours == 168 and t.kpi.health.good_min == 60
    assert t.graph_token_scope == "https://graph.microsoft.com/.default"


def test_every_problem_is_reported_with_its_key_path() -> None:
    got = problems(
        {
            "tenant": [
                {**GOOD, "name": "Bad Name", "timezone": "Mars/Olympus", "sync": {"lookbak_days": 3, "page_size": 5}},
                {**GOOD, "client_id": "nope", "credential": {"secret_env": "X", "secret_file": "/s"}},
            ],
            "databse": {},
        }
    )
    text = "\n".join(got)
    assert "tenant[0] (Bad Name).name: use lower-case letters" in text
    assert "tenant[0] (Bad Name).timezone: unknown IANA time zone 'Mars/Olympus'" in text
    assert "tenant[0] (Bad Name).sync.lookbak_days: unknown key" in text
    assert "tenant[0] (Bad Name).sync.page_size: Input should be greater than or equal to 10" in text
    assert "tenant[1] (contoso).client_id: the application (client) id: a GUID" in text
    assert "tenant[1] (contoso).credential: set exactly one of certificate, secret_file, secret_env" in text
    assert "databse: unknown key" in text
    assert len(got) == 7


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"credential": {}}, "set exactly one of certificate, secret_file, secret_env (found none)"),
        ({"credential": {"secret": "hunter2"}}, "credential.secret: unknown key"),
        ({"scope": {"mode": "group"}}, "mode = 'group' needs group_id"),
        ({"scope": {"mode": "list"}}, "mode = 'list' needs a non-empty mailboxes list"),
        ({"scope": {"exclude_users": ["not-an-address"]}}, "not an email address: 'not-an-address'"),
        ({"graph_url": "http://graph.example"}, "must be an https:// URL"),
        ({"sync": {"lookback_days": 1800, "calendar_future_days": 90}}, "at most 1825"),
        ({"kpi": {"health": {"fair_min": 70}}}, "fair_min must be below good_min"),
        ({"kpi": {"workday_start": "18:00:00", "workday_end": "09:00:00"}}, "workday_end must be after workday_start"),
        ({"internal_domains": ["bad domain!"]}, "not a valid domain name"),
    ],
)
def test_single_problems(patch: dict, expected: str) -> None:
    assert any(expected in p for p in problems({"tenant": [{**GOOD, **patch}]})), problems(
        {"tenant": [{**GOOD, **patch}]}
    )


def test_duplicate_tenant_names_and_missing_keys() -> None:
    assert problems({"tenant": [GOOD, GOOD]}) == ["(top level): tenant names must be unique; repeated: contoso"]
    got = problems({"tenant": [GOOD, {"name": "x"}]})
    assert "tenant[1] (x).tenant_id: required key is missing" in got
    assert "tenant[1] (x).client_id: required key is missing" in got


def test_normalisation_and_relative_paths(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text(
        '[[tenant]]\nname = "c"\ntenant_id = "c.onmicrosoft.com"\nclient_id = "00000000-0000-0000-0000-000000000001"\n'
        'internal_domains = ["Bücher.Example", "contoso.com."]\nca_bundle = "ca.pem"\n'
        '[tenant.credential]\ncertificate = "certs/app.pem"\n[tenant.scope]\nexclude_users = [" Ann@Fabrikam.COM "]\n'
    )
    t = load_config(f).tenants[0]
    assert t.internal_domains == ["contoso.com", "xn--bcher-kva.example"]
    assert t.credential.certificate == tmp_path / "certs" / "app.pem" and t.ca_bundle == tmp_path / "ca.pem"
    assert t.scope.exclude_users == ["ann@fabrikam.com"]


def test_cli_exits_78_on_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[tenant]]\nname = 'x'\nunknown = 1\n")
    runner = CliRunner()
    res = runner.invoke(app, ["status", "--config", str(bad)])
    assert res.exit_code == EX_CONFIG
    assert "tenant[0] (x).unknown: unknown key" in res.output and "tenant[0] (x).client_id" in res.output
    res = runner.invoke(app, ["sync", "--once", "--config", str(tmp_path / "missing.toml")])
    assert res.exit_code == EX_CONFIG and "relinsights init" in res.output
    bad.write_text("[[tenant]\n")
    res = runner.invoke(app, ["status", "--config", str(bad)])
    assert res.exit_code == EX_CONFIG and "not valid TOML" in res.output


def test_init_writes_the_commented_example_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    target = tmp_path / "etc" / "relinsights.toml"
    assert runner.invoke(app, ["init", str(target)]).exit_code == 0
    assert target.read_text() == example_config_text() and oct(target.stat().st_mode & 0o777) == "0o640"
    assert runner.invoke(app, ["init", str(target)]).exit_code == 1
    assert runner.invoke(app, ["init", str(target), "--force"]).exit_code == 0


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "env.toml"
    f.write_text(f'[service]\nstate_dir = "{tmp_path}"\n')
    monkeypatch.setenv("RELINSIGHTS_CONFIG", str(f))
    res = CliRunner().invoke(app, ["status", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {"tenants": [], "mailboxes": []}
    assert (tmp_path / "relinsights.db").exists() and oct(
        (tmp_path / "relinsights.db").stat().st_mode & 0o777
    ) == "0o600"
