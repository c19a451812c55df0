/** @odoo-module **/
// odoo_sync dashboard: polls odoo_sync.dashboard.get_data every 5 s and
// re-renders in place (no page reload).
import { Component, onWillStart, onWillUnmount, useState } from "@odoo/owl";
import { registry } from "@web/core/registry";
import { useService } from "@web/core/utils/hooks";

export class OdooSyncDashboard extends Component {
    static template = "odoo_sync.Dashboard";
    static props = ["*"];

    setup() {
        this.orm = useService("orm");
        this.action = useService("action");
        this.state = useState({ data: null, updated: null, error: null });
        onWillStart(() => this.load());
        const timer = setInterval(() => this.load(), 5000);
        onWillUnmount(() => clearInterval(timer));
    }

    async load() {
        try {
            this.state.data = await this.orm.call("odoo_sync.dashboard", "get_data", []);
            this.state.updated = new Date().toLocaleTimeString();
            this.state.error = null;
        } catch (e) {
            this.state.error = (e && e.message) || String(e);
        }
    }

    fmt(v, digits = 1) {
        if (v === null || v === undefined) {
            return "–";
        }
        return typeof v === "number" ? Number(v.toFixed(digits)).toString() : String(v);
    }

    openDead() {
        this.action.doAction("odoo_sync.odoo_sync_delivery_dead_action");
    }

    openInboundDead() {
        this.action.doAction({
            type: "ir.actions.act_window", name: "Dead inbound events",
            res_model: "odoo_sync.inbound.event", views: [[false, "list"], [false, "form"]],
            domain: [["state", "=", "dead"]],
        });
    }

    openEndpoint(id) {
        this.action.doAction({
            type: "ir.actions.act_window", res_model: "odoo_sync.endpoint",
            res_id: id, views: [[false, "form"]],
        });
    }
}

registry.category("actions").add("odoo_sync.dashboard", OdooSyncDashboard);
