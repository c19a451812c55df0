# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The only place where the addon talks SQL to the extension.

Every statement is parameterised (psycopg2 placeholders); writes to the
extension's data go through its functions (create_endpoint, subscribe,
redeliver, retry_dead, reapply, ingest, ...), never through INSERT/UPDATE on
its tables.  Errors raised by those functions come back as UserError with
PostgreSQL's message, detail and hint, inside a savepoint so that the Odoo
transaction stays usable.
"""
import logging

import psycopg2

from odoo.exceptions import UserError

_logger = logging.getLogger(__name__)

# functions the addon calls, with the privilege it needs on each
REQUIRED_FUNCTIONS = (
    "odoo_sync.ingest(jsonb)",
    "odoo_sync.redeliver(uuid, text)",
    "odoo_sync.retry_dead(text)",
    "odoo_sync.reapply(bigint)",
    "odoo_sync.subscribe(text, text[], text[], boolean)",
    "odoo_sync.set_endpoint_secret(text, text)",
    "odoo_sync.alter_endpoint(text, jsonb)",
    "odoo_sync.erp_action_claim(bigint[])",
    "odoo_sync.erp_action_finish(bigint, text, jsonb, text)",
    "odoo_sync.erp_action_retry(bigint[])",
    "odoo_sync.set_billing_var(text, jsonb)",
)


def extension_present(cr):
    cr.execute("SELECT extversion FROM pg_extension WHERE extname = 'odoo_sync'")
    row = cr.fetchone()
    return row[0] if row else None


def missing_requirements(cr):
    """What keeps the addon from working in this database (empty when fine)."""
    if not extension_present(cr):
        return ["the extension is not created (CREATE EXTENSION odoo_sync)"]
    problems = []
    for sig in REQUIRED_FUNCTIONS:
        cr.execute("SELECT to_regprocedure(%s)", (sig,))
        if cr.fetchone()[0] is None:
            problems.append("function %s is missing (extension too old?)" % sig)
            continue
        cr.execute("SELECT has_function_privilege(%s, 'EXECUTE')", (sig,))
        if not cr.fetchone()[0]:
            problems.append("no EXECUTE privilege on %s" % sig)
    return problems


def call(cr, query, params=()):
    """Run one statement against the extension inside a savepoint.

    Returns the fetched rows (or []).  A PostgreSQL error becomes a UserError
    carrying its message, detail and hint.
    """
    try:
        with cr.savepoint(flush=False):
            cr.execute(query, params)
            return cr.fetchall() if cr.description else []
    except psycopg2.Error as e:
        diag = e.diag
        parts = [diag.message_primary or str(e)]
        if diag.message_detail:
            parts.append(diag.message_detail)
        if diag.message_hint:
            parts.append(diag.message_hint)
        raise UserError("odoo_sync: " + "\n".join(parts)) from None


def call_dict(cr, query, params=()):
    try:
        with cr.savepoint(flush=False):
            cr.execute(query, params)
            return cr.dictfetchall() if cr.description else []
    except psycopg2.Error as e:
        raise UserError("odoo_sync: %s" % (e.diag.message_primary or e)) from None
