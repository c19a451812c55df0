# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo.exceptions import UserError

from . import controllers, models
from .models.odoo_sync_sql import REQUIRED_FUNCTIONS, missing_requirements


def pre_init_hook(env):
    """Refuse to install where the extension is missing or unusable.

    The addon only reads the odoo_sync schema and calls its functions; without
    the extension every screen would fail on its first query, so the install
    stops here with what the DBA has to run.
    """
    problems = missing_requirements(env.cr)
    if problems:
        raise UserError(
            "odoo_sync: the PostgreSQL extension odoo_sync is not usable in "
            "database %r: %s.\n\nAsk your DBA to run, as a superuser:\n"
            "  1. in postgresql.conf: shared_preload_libraries = 'odoo_sync', "
            "wal_level = logical, and odoo_sync added to output_plugin_libraries "
            "where the server has that setting, then restart PostgreSQL;\n"
            "  2. in database %r: CREATE EXTENSION odoo_sync;\n"
            "  3. GRANT odoo_sync_admin, odoo_sync_ingest TO <Odoo's database "
            "role> (not needed when that role owns the extension).\n"
            "Then install this module again."
            % (env.cr.dbname, "; ".join(problems), env.cr.dbname)
        )


__all__ = ["REQUIRED_FUNCTIONS", "pre_init_hook"]
