"""Every API action has an explicit permission declaration, and docs/api.md shows them as declared."""

from connector.api.access_table import DOCS_FILE, api_actions, docs_with_table, stale_declarations

LEGACY_ATTRIBUTES = ("read_roles", "write_roles", "tokens_allowed", "token_writes_allowed")


def test_every_api_view_and_method_is_declared_in_the_access_table():
    actions = api_actions()
    undeclared = [f"{a.method} /{a.route} (URL name {a.url_name!r})" for a in actions if a.rule is None]

    assert len(actions) > 30  # the walk found the API
    assert undeclared == [], "declare these in connector/api/access.py ACCESS"


def test_the_access_table_names_no_action_the_api_does_not_answer():
    assert stale_declarations() == []


def test_no_view_declares_roles_on_itself_any_more():
    """Roles on the view would be ignored; they belong in ACCESS, the one place."""
    leftovers = sorted(
        {
            f"{action.view.__module__}.{action.view.__name__}.{name}"
            for action in api_actions()
            for name in LEGACY_ATTRIBUTES
            if hasattr(action.view, name)
        }
    )
    assert leftovers == []


def test_the_docs_permissions_table_is_generated_from_the_code():
    text = DOCS_FILE.read_text()

    assert "## Permissions" in text
    assert docs_with_table(text) == text, "run: python manage.py api_access_table --write"
