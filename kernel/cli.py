"""Command line, through Flask's CLI: ``flask --app app roles|documents|admin-key ...``."""

from contextlib import contextmanager
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from . import auth
from .db import get_db
from .documents_api import TEXT_SUFFIXES
from .store import StoreError, knowledge, roles

@contextmanager
def store_errors_as_messages():
    """A store error ends the command with its message (exit 1), not a traceback."""
    try:
        yield
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


roles_cli = AppGroup("roles", help="Create, list and delete roles (stored personas).")
documents_cli = AppGroup("documents", help="Add documents to the L0 knowledge, list and delete them.")


@roles_cli.command("create")
@click.option("--name", required=True, help="Unique name, 1-100 characters.")
@click.option("--system-prompt", required=True, help="The persona's system prompt.")
@click.option("--description", default="", help="What the role is for (up to 500 characters).")
@click.option("--l0/--no-l0", "enable_l0_retrieval", default=False, help="Retrieve knowledge by default.")
@click.option("--default", "is_default", is_flag=True, help="Make it the default persona ('default_role').")
def create_role(name, system_prompt, description, enable_l0_retrieval, is_default):
    """Create a role and print its id."""
    from .schema import validator

    fields = {"name": name, "system_prompt": system_prompt, "description": description,
              "enable_l0_retrieval": enable_l0_retrieval, "is_default": is_default}
    problems = [e.message for e in validator("role_create").iter_errors(fields)]
    if problems:
        raise click.UsageError("; ".join(problems))
    with store_errors_as_messages():
        role = roles.create(get_db(), **fields)
    click.echo(role["role_id"])


@roles_cli.command("list")
def list_roles():
    """List roles: id, retrieval default, name; '*' marks the default persona."""
    for role in roles.list_all(get_db()):
        mark = "*" if role["is_default"] else " "
        click.echo(f"{role['role_id']} {mark} {'l0' if role['enable_l0_retrieval'] else '--'}  {role['name']}")


@roles_cli.command("default")
@click.argument("role_id", required=False)
@click.option("--clear", is_flag=True, help="No default persona: 'default_role' leaves the client's messages.")
def default_role(role_id, clear):
    """Make ROLE_ID the default persona (what metadata.role_id 'default_role' names), or --clear it."""
    if bool(role_id) == clear:
        raise click.UsageError("give a ROLE_ID, or --clear")
    with store_errors_as_messages():
        if clear:
            current = roles.get_default(get_db())
            if current is not None:
                roles.update(get_db(), current["role_id"], is_default=False)
            click.echo("no default role")
        else:
            role = roles.update(get_db(), role_id, is_default=True)
            click.echo(f"default role: {role['name']} ({role['role_id']})")


@roles_cli.command("delete")
@click.argument("role_id")
def delete_role(role_id):
    """Delete a role by id."""
    with store_errors_as_messages():
        roles.delete(get_db(), role_id)
    click.echo(f"deleted {role_id}")


def _text_files(paths):
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        else:
            yield path


@documents_cli.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def ingest(paths):
    """Add .txt and .md files, or every such file under the given folders."""
    files = list(_text_files(paths))
    added = duplicates = failed = chunks = 0
    conn = get_db()
    size = current_app.config["KERNEL_L0_CHUNK_CHARS"]
    with click.progressbar(files, label="Ingesting", show_pos=True, item_show_func=lambda p: p and p.name) as bar:
        for path in bar:
            try:
                content = path.read_text(encoding="utf-8-sig")
                document, created = knowledge.add(conn, path.stem, content, str(path), chunk_chars=size)
            except (OSError, UnicodeDecodeError, StoreError) as exc:
                failed += 1
                click.echo(f"\nskipped {path}: {exc}", err=True)
                continue
            added += created
            duplicates += not created
            chunks += document["chunk_count"] if created else 0
    click.echo(f"{added} added ({chunks} chunks), {duplicates} already known, {failed} skipped")
    if failed:
        raise SystemExit(1)


@documents_cli.command("list")
@click.option("--limit", default=50, show_default=True)
@click.option("--offset", default=0, show_default=True)
def list_documents(limit, offset):
    """List documents: id, chunks, title."""
    documents, total = knowledge.page(get_db(), limit, offset)
    for document in documents:
        click.echo(f"{document['document_id']}  {document['chunk_count']:5d}  {document['title']}")
    click.echo(f"{len(documents)} of {total}")


@documents_cli.command("delete")
@click.argument("document_id")
def delete_document(document_id):
    """Delete a document and its chunks."""
    with store_errors_as_messages():
        knowledge.delete(get_db(), document_id)
    click.echo(f"deleted {document_id}")


@click.command("admin-key")
@with_appcontext
def admin_key():
    """Say where the admin key is."""
    if current_app.config["KERNEL_ADMIN_KEY"]:
        click.echo("The admin key is set by KERNEL_ADMIN_KEY.")
    else:
        click.echo(auth.key_path(current_app.config["KERNEL_DATA_DIR"]).resolve())


def init_app(app):
    app.cli.add_command(roles_cli)
    app.cli.add_command(documents_cli)
    app.cli.add_command(admin_key)
