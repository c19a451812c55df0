-- A minimal Odoo-17-shaped schema for the inbound tests, loaded only where
-- the project fixture (test/fixtures/odoo_fixture.sql) is not present.
-- Column names and types are those of Odoo 17 (../shared/odoo17/NOTES.md);
-- only the columns inbound reads or writes, plus the NOT NULL ones.
CREATE TABLE IF NOT EXISTS public.sale_order (
	id serial PRIMARY KEY,
	company_id integer NOT NULL,
	partner_id integer NOT NULL,
	partner_invoice_id integer NOT NULL,
	partner_shipping_id integer NOT NULL,
	name character varying NOT NULL,
	state character varying,
	invoice_status character varying,
	date_order timestamp without time zone NOT NULL,
	warehouse_id integer NOT NULL,
	picking_policy character varying NOT NULL,
	write_date timestamp without time zone
);
CREATE TABLE IF NOT EXISTS public.stock_picking (
	id serial PRIMARY KEY,
	location_id integer NOT NULL,
	location_dest_id integer NOT NULL,
	picking_type_id integer NOT NULL,
	partner_id integer,
	company_id integer,
	name character varying,
	origin character varying,
	move_type character varying NOT NULL,
	state character varying,
	date_done timestamp without time zone,
	create_date timestamp without time zone,
	write_date timestamp without time zone,
	sale_id integer REFERENCES public.sale_order (id) ON DELETE SET NULL,
	weight numeric,
	carrier_id integer,
	carrier_tracking_ref character varying,
	carrier_price double precision,
	CONSTRAINT stock_picking_name_uniq UNIQUE (name, company_id)
);
CREATE TABLE IF NOT EXISTS public.stock_move (
	id serial PRIMARY KEY,
	company_id integer NOT NULL,
	product_id integer NOT NULL,
	product_uom integer NOT NULL,
	location_id integer NOT NULL,
	location_dest_id integer NOT NULL,
	picking_id integer REFERENCES public.stock_picking (id),
	name character varying NOT NULL,
	state character varying,
	procure_method character varying NOT NULL,
	product_qty numeric,
	product_uom_qty numeric NOT NULL,
	quantity numeric,
	date timestamp without time zone NOT NULL,
	sale_line_id integer
);
CREATE TABLE IF NOT EXISTS public.ir_model_data (
	id serial PRIMARY KEY,
	res_id integer,
	noupdate boolean DEFAULT false,
	name character varying NOT NULL,
	module character varying NOT NULL,
	model character varying NOT NULL
);
CREATE TABLE IF NOT EXISTS public.ir_cron (
	id serial PRIMARY KEY,
	ir_actions_server_id integer NOT NULL,
	user_id integer NOT NULL,
	cron_name character varying,
	active boolean,
	nextcall timestamp without time zone NOT NULL
);
CREATE TABLE IF NOT EXISTS public.ir_cron_trigger (
	id serial PRIMARY KEY,
	cron_id integer REFERENCES public.ir_cron (id) ON DELETE SET NULL,
	create_uid integer,
	write_uid integer,
	call_at timestamp without time zone,
	create_date timestamp without time zone,
	write_date timestamp without time zone
);
