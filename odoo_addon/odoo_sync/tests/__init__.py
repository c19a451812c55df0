# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from . import test_install, test_controller, test_erp_action, test_chain
