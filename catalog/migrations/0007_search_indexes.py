"""Search indexes for file names and paths: trigram GIN indexes on PostgreSQL (pg_trgm, in contrib), an FTS5
table with the trigram tokenizer on SQLite (kept in step with catalog_pathname by triggers)."""

from django.db import migrations

POSTGRES = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS catalog_pathname_name_trgm ON catalog_pathname USING gin (name gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS catalog_pathname_text_trgm ON catalog_pathname USING gin (text gin_trgm_ops)",
]
POSTGRES_DROP = [
    "DROP INDEX IF EXISTS catalog_pathname_name_trgm",
    "DROP INDEX IF EXISTS catalog_pathname_text_trgm",
]
SQLITE = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS catalog_pathname_fts USING fts5("
    "name, text, content='catalog_pathname', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER IF NOT EXISTS catalog_pathname_fts_insert AFTER INSERT ON catalog_pathname BEGIN "
    "INSERT INTO catalog_pathname_fts(rowid, name, text) VALUES (new.id, new.name, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS catalog_pathname_fts_delete AFTER DELETE ON catalog_pathname BEGIN "
    "INSERT INTO catalog_pathname_fts(catalog_pathname_fts, rowid, name, text) "
    "VALUES ('delete', old.id, old.name, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS catalog_pathname_fts_update AFTER UPDATE ON catalog_pathname BEGIN "
    "INSERT INTO catalog_pathname_fts(catalog_pathname_fts, rowid, name, text) "
    "VALUES ('delete', old.id, old.name, old.text); "
    "INSERT INTO catalog_pathname_fts(rowid, name, text) VALUES (new.id, new.name, new.text); END",
    "INSERT INTO catalog_pathname_fts(catalog_pathname_fts) VALUES ('rebuild')",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS catalog_pathname_fts_insert",
    "DROP TRIGGER IF EXISTS catalog_pathname_fts_delete",
    "DROP TRIGGER IF EXISTS catalog_pathname_fts_update",
    "DROP TABLE IF EXISTS catalog_pathname_fts",
]


def _run(statements: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def apply(apps, schema_editor):  # type: ignore[no-untyped-def]
        for statement in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return apply


class Migration(migrations.Migration):
    dependencies = [("catalog", "0006_catalog_claims")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRES, "sqlite": SQLITE}),
            _run({"postgresql": POSTGRES_DROP, "sqlite": SQLITE_DROP}),
        )
    ]
