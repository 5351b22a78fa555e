from __future__ import annotations

import pytest

from relinsights.analytics import InternalUser, PartyKind, PartyRules, registrable_domain
from relinsights.analytics.parties import canonical_address, parse_free_mail, shipped_free_mail
from relinsights.config import KpiConfig

from .factory import rules

INT, E, X, BAD = PartyKind.INTERNAL, PartyKind.EXTERNAL, PartyKind.IGNORED, PartyKind.INVALID


def test_internal_domain_after_trim_case_and_idna() -> None:
    r = rules(domains=["Bücher.Example", "contoso.com"])
    assert r.classify("  Bob@CONTOSO.com ") is INT
    assert r.classify("anna@xn--bcher-kva.example") is INT
    assert r.classify("anna@BÜCHER.example") is INT
    assert r.classify("anna@sub.contoso.com") is E  # internal domains match exactly


def test_user_aliases_are_internal_and_one_person() -> None:
    bob = InternalUser("bob@contoso.com", aliases=("robert@contoso-old.com", "SMTP-less"))
    r = rules(users=[bob])
    assert r.classify("Robert@Contoso-Old.com") is INT
    assert r.person("robert@contoso-old.com") == "bob@contoso.com"
    assert r.person("ann@fabrikam.com") == "ann@fabrikam.com"


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("noreply@fabrikam.com", X),
        ("No-Reply@fabrikam.com", X),
        ("noreply+bounce-123@fabrikam.com", X),
        ("mailer-daemon@fabrikam.com", X),
        ("notifications@contoso.com", X),  # ignored wins over internal
        ("spam@partner.example", X),  # excluded address
        ("ann@news.marketing.example", X),  # subdomain of an excluded domain
        ("ann@marketing.example", X),
        ("ann@themarketing.example", E),
        ("ann@fabrikam.com", E),
        ("not an address", BAD),
        ("/o=ExchangeLabs/ou=Exchange/cn=Recipients/cn=bob", BAD),
        ("a@b@c.com", BAD),
        ("ann@localhost", BAD),
        ("", BAD),
    ],
)
def test_classification(address: str, kind: PartyKind) -> None:
    kpi = KpiConfig(excluded_addresses=["Spam@Partner.example"], excluded_domains=["marketing.example"])
    assert rules(kpi=kpi).classify(address) is kind


def test_opted_out_user_every_alias_ignored() -> None:
    carl = InternalUser("carl@contoso.com", aliases=("c.smith@contoso.com",), opted_out=True, systemuser_id="SU-C")
    r = rules(users=[carl])
    assert r.classify("carl@contoso.com") is X
    assert r.classify("c.smith@contoso.com") is X
    assert r.classify("dan@contoso.com") is INT


def test_systemuser_person_is_the_users_primary_address() -> None:
    r = rules(users=[InternalUser("bob@contoso.com", systemuser_id="ABC-1")])
    assert r.systemuser_person("abc-1") == "bob@contoso.com"
    assert r.systemuser_person("zzz") == "systemuser:zzz"


def test_canonical_address() -> None:
    assert canonical_address(" <Ann@Fabrikam.COM> ") == "ann@fabrikam.com"
    assert canonical_address("mailto:ann@fabrikam.com") == "ann@fabrikam.com"
    assert canonical_address("ann@bücher.de") == "ann@xn--bcher-kva.de"
    assert canonical_address("ann fabrikam.com") is None


@pytest.mark.parametrize(
    ("domain", "registrable"),
    [
        ("fabrikam.com", "fabrikam.com"),
        ("mail.eu.fabrikam.com", "fabrikam.com"),
        ("shop.fabrikam.co.uk", "fabrikam.co.uk"),
        ("fabrikam.blogspot.com", "fabrikam.blogspot.com"),  # private PSL section
        ("co.uk", "co.uk"),  # a bare public suffix stays itself
    ],
)
def test_registrable_domain_from_the_shipped_psl(domain: str, registrable: str) -> None:
    assert registrable_domain(domain) == registrable


def test_shipped_free_mail_list_is_versioned() -> None:
    shipped = shipped_free_mail()
    assert shipped.version != "unversioned"
    assert {"gmail.com", "outlook.com", "yahoo.com", "aol.com", "onmicrosoft.com"} <= shipped.domains


def test_free_mail_tenant_extension_and_subdomains() -> None:
    r = rules(kpi=KpiConfig(free_mail_domains=["Free-Mail.example"]))
    assert r.is_free_mail("gmail.com")
    assert r.is_free_mail("mail.yahoo.co.uk")  # its registrable domain is on the list
    assert r.is_free_mail("fabrikam.onmicrosoft.com")
    assert r.is_free_mail("free-mail.example")
    assert not r.is_free_mail("fabrikam.com")
    assert not rules().is_free_mail("free-mail.example")


def test_parse_free_mail_rejects_garbage() -> None:
    assert parse_free_mail("# version: 7\nGmail.com\n\n").domains == {"gmail.com"}
    with pytest.raises(ValueError, match="not a domain"):
        parse_free_mail("not a domain\n")


def test_party_rules_for_tenant_uses_verified_domains() -> None:
    from relinsights.config import parse_config

    cfg = parse_config(
        {
            "tenant": [
                {
                    "name": "t",
                    "tenant_id": "contoso.onmicrosoft.com",
                    "client_id": "11111111-2222-3333-4444-555555555555",
                    "credential": {"secret_env": "X"},
                    "internal_domains": ["contoso.com"],
                }
            ]
        }
    )
    r = PartyRules.for_tenant(cfg.tenants[0], verified_domains=["contoso.onmicrosoft.com"])
    assert r.classify("bob@contoso.onmicrosoft.com") is INT
    assert r.classify("bob@contoso.com") is INT
