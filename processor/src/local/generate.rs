//! The demo's data: the e-commerce data set of the example catalog — customers (CSV),
//! orders (JSON lines), order items (CSV), payments (Parquet) — and a stream of order
//! status events, generated from a seed so a run can be checked row by row. A share of
//! the rows is dirty the way real extracts are (impossible dates, text in number columns,
//! missing required values), and some events are malformed (cut-off JSON, wrong types,
//! missing fields). The generator knows how many rows of each kind it wrote, so the
//! expected warehouse is known before anything loads.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shared::stream::OutgoingRecord;

use crate::timefmt::{iso_date, iso_utc_micros};

/// 2026-11-01T00:00:00Z, in microseconds: orders and events fall in the month after.
const BASE_MICROS: i64 = 1_793_491_200_000_000;
const DAY_MICROS: i64 = 86_400_000_000;
const COUNTRIES: &[&str] = &["DE", "FR", "NL", "US", "GB", "ES", "IT", "PL", "SE", "JP"];
const FIRST_NAMES: &[&str] = &[
    "Ada", "Ben", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal",
    "Lena", "Mateo", "Noor", "Olga", "Pierre",
];
const LAST_NAMES: &[&str] = &[
    "Meyer",
    "Dubois",
    "de Vries",
    "Smith",
    "Brown",
    "García",
    "Rossi",
    "Nowak",
    "Lindqvist",
    "Tanaka",
    "O'Brien",
    "Schmidt",
];
const STATUSES: &[&str] = &["Placed", "PAID", "shipped", "Delivered", "cancelled"];
const CURRENCIES: &[&str] = &["eur", "usd", "gbp", "sek", "jpy"];
const METHODS: &[&str] = &["card", "paypal", "bank_transfer", "voucher"];
const EVENT_STATUSES: &[&str] = &["paid", "packed", "shipped", "out_for_delivery", "delivered"];

/// How much to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemoSize {
    pub customers: usize,
    pub orders: usize,
    pub events: usize,
    /// Share of rows (and events) that are dirty, 0 to 0.5.
    pub dirty_share: f64,
    pub seed: u64,
}

impl Default for DemoSize {
    fn default() -> Self {
        Self {
            customers: 2_000,
            orders: 6_000,
            events: 3_000,
            dirty_share: 0.02,
            seed: 42,
        }
    }
}

/// A file for the landing folder, under its object key.
#[derive(Debug, Clone)]
pub struct GeneratedFile {
    pub key: String,
    pub bytes: Vec<u8>,
}

/// What a dataset should hold once everything is loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expected {
    /// Rows in the target table.
    pub rows: u64,
    /// Rows in the rejects table (files) or records quarantined (the stream).
    pub rejected: u64,
}

/// The demo's data and its expected outcome.
#[derive(Debug, Clone)]
pub struct Generated {
    pub files: Vec<GeneratedFile>,
    pub events: Vec<OutgoingRecord>,
    pub expected: BTreeMap<&'static str, Expected>,
}

/// One order of the JSON-lines files.
#[derive(serde::Serialize)]
struct OrderLine<'a> {
    order_id: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_id: Option<i64>,
    ordered_at: String,
    status: &'a str,
    currency: &'a str,
    total_amount: f64,
}

/// Each row is clean or carries one of three faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Clean,
    BadValue,
    WrongType,
    Missing,
}

struct Dice {
    rng: StdRng,
    dirty_share: f64,
}

impl Dice {
    fn fault(&mut self) -> Fault {
        if self.rng.random_bool(self.dirty_share) {
            match self.rng.random_range(0..3) {
                0 => Fault::BadValue,
                1 => Fault::WrongType,
                _ => Fault::Missing,
            }
        } else {
            Fault::Clean
        }
    }

    fn pick<'a>(&mut self, values: &[&'a str]) -> &'a str {
        values[self.rng.random_range(0..values.len())]
    }

    /// A time in November 2026, skewed towards the evening like real shopping.
    fn time_micros(&mut self) -> i64 {
        let day = self.rng.random_range(0..30);
        let hour: i64 = if self.rng.random_bool(0.6) {
            self.rng.random_range(17..23)
        } else {
            self.rng.random_range(0..24)
        };
        BASE_MICROS
            + day * DAY_MICROS
            + hour * 3_600_000_000
            + self.rng.random_range(0..3_600_000_000)
    }

    /// Prices are log-normal-ish: many small, few large.
    fn price_cents(&mut self) -> i64 {
        let base: f64 = self.rng.random_range(0.0..1.0);
        (199.0 + 30_000.0 * base.powi(3)).round() as i64
    }
}

fn cents(value: i64) -> String {
    format!("{}.{:02}", value / 100, value % 100)
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// Rows per file at most: with up to 5 % dirty rows a file stays within the catalog's
/// reject limits (500 for customers), as a real extract would be cut.
const MAX_ROWS_PER_FILE: usize = 5_000;

/// Cuts rows into at least `count` files of about equal size.
fn chunks<T>(rows: Vec<T>, count: usize) -> Vec<Vec<T>> {
    let count = count.max(rows.len().div_ceil(MAX_ROWS_PER_FILE));
    let per = rows.len().div_ceil(count.max(1)).max(1);
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut current = Vec::with_capacity(per);
    for row in rows {
        current.push(row);
        if current.len() == per {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// Generates everything for `size`; the same size always gives the same bytes (the
/// dice are drawn in one fixed order: customers, orders with their items and payments,
/// events).
pub fn generate(size: &DemoSize) -> Generated {
    let mut dice = Dice {
        rng: StdRng::seed_from_u64(size.seed),
        dirty_share: size.dirty_share.clamp(0.0, 0.5),
    };
    let mut expected: BTreeMap<&'static str, Expected> = BTreeMap::new();
    let mut files = customers(&mut dice, size, &mut expected);
    files.extend(orders(&mut dice, size, &mut expected));
    let events = events(&mut dice, size, &mut expected);
    Generated {
        files,
        events,
        expected,
    }
}

/// Counts a generated row as loaded or rejected for `dataset`.
fn expect(expected: &mut BTreeMap<&'static str, Expected>, dataset: &'static str, fault: Fault) {
    let entry = expected.entry(dataset).or_default();
    if fault == Fault::Clean {
        entry.rows += 1;
    } else {
        entry.rejected += 1;
    }
}

/// Customers: CSV, the second file gzip-compressed.
fn customers(
    dice: &mut Dice,
    size: &DemoSize,
    expected: &mut BTreeMap<&'static str, Expected>,
) -> Vec<GeneratedFile> {
    let mut lines = Vec::with_capacity(size.customers);
    for id in 1..=size.customers as i64 {
        let fault = dice.fault();
        let name = format!("{} {}", dice.pick(FIRST_NAMES), dice.pick(LAST_NAMES));
        let full_name = if id % 7 == 0 {
            format!("{}, {}", dice.pick(LAST_NAMES), dice.pick(FIRST_NAMES)) // a comma: quoted
        } else {
            name
        };
        let country = dice.pick(COUNTRIES);
        let signup_day = 19_000 + dice.rng.random_range(0..1_400);
        let updated = iso_utc_micros(dice.time_micros());
        let (id_text, signup) = match fault {
            Fault::Clean => (id.to_string(), iso_date(signup_day)),
            Fault::BadValue => (id.to_string(), "2026-02-30".to_owned()),
            Fault::WrongType => (format!("C-{id}"), iso_date(signup_day)),
            Fault::Missing => (String::new(), iso_date(signup_day)),
        };
        expect(expected, "customers", fault);
        lines.push(format!(
            "{id_text},customer.{id}@example.com,{},{country},{signup},{updated}\n",
            csv_field(&full_name)
        ));
    }
    let header = "customer_id,email,full_name,country,signup_date,updated_at\n";
    let mut files = Vec::new();
    for (index, chunk) in chunks(lines, 2).into_iter().enumerate() {
        let body = format!("{header}{}", chunk.concat());
        files.push(if index == 1 {
            GeneratedFile {
                key: format!("landing/customers/customers-{index:03}.csv.gz"),
                bytes: gzip(body.as_bytes()),
            }
        } else {
            GeneratedFile {
                key: format!("landing/customers/customers-{index:03}.csv"),
                bytes: body.into_bytes(),
            }
        });
    }
    files
}

/// A payment row: id, order, method, amount and time (amount and time as text).
type Payment = (String, Option<i64>, String, String, String);

/// Orders (JSON lines), their items (CSV, the second file zstd-compressed) and payments
/// (Parquet).
fn orders(
    dice: &mut Dice,
    size: &DemoSize,
    expected: &mut BTreeMap<&'static str, Expected>,
) -> Vec<GeneratedFile> {
    let mut orders = Vec::with_capacity(size.orders);
    let mut items = Vec::new();
    let mut payments: Vec<Payment> = Vec::new();
    let customers = size.customers.max(1) as i64;
    for order_id in 1..=size.orders as i64 {
        let fault = dice.fault();
        let customer_id = dice.rng.random_range(1..=customers);
        let ordered_at = dice.time_micros();
        let total = order_items(dice, order_id, expected, &mut items);
        // A struct, not a JSON map: its field order does not depend on serde_json's
        // `preserve_order` feature, which other crates may switch on in some builds, so
        // the bytes (and the file's entity tag) are the same whatever the build.
        let status = dice.pick(STATUSES);
        let currency = dice.pick(CURRENCIES);
        let mut order = OrderLine {
            order_id: order_id.into(),
            customer_id: Some(customer_id),
            ordered_at: iso_utc_micros(ordered_at),
            status,
            currency,
            total_amount: cents(total).parse::<f64>().unwrap_or(0.0),
        };
        match fault {
            Fault::Clean => {}
            Fault::BadValue => order.ordered_at = "last tuesday".to_owned(),
            Fault::WrongType => order.order_id = format!("ORD-{order_id}").into(),
            Fault::Missing => order.customer_id = None,
        }
        expect(expected, "orders", fault);
        orders.push(format!(
            "{}\n",
            serde_json::to_string(&order).expect("a plain struct serialises")
        ));
        // Most orders are paid once.
        if dice.rng.random_bool(0.95) {
            payments.push(payment(dice, order_id, ordered_at, total, expected));
        }
    }
    order_files(orders, items, payments)
}

/// One to four item lines of an order; returns the order's total in cents.
fn order_items(
    dice: &mut Dice,
    order_id: i64,
    expected: &mut BTreeMap<&'static str, Expected>,
    items: &mut Vec<String>,
) -> i64 {
    let mut total = 0;
    let lines = dice.rng.random_range(1..=4);
    for line_number in 1..=lines {
        let item_fault = dice.fault();
        let quantity = dice.rng.random_range(1..=5);
        let price = dice.price_cents();
        total += quantity * price;
        let sku = format!("SKU-{:05}", dice.rng.random_range(1..2_000));
        let (quantity_text, price_text, sku_text) = match item_fault {
            Fault::Clean => (quantity.to_string(), cents(price), sku),
            Fault::BadValue => (quantity.to_string(), "12.345.6".to_owned(), sku),
            Fault::WrongType => ("three".to_owned(), cents(price), sku),
            Fault::Missing => (quantity.to_string(), cents(price), String::new()),
        };
        expect(expected, "order_items", item_fault);
        items.push(format!(
            "{order_id},{line_number},{sku_text},{quantity_text},{price_text}\n"
        ));
    }
    total
}

/// The payment of an order.
fn payment(
    dice: &mut Dice,
    order_id: i64,
    ordered_at: i64,
    total: i64,
    expected: &mut BTreeMap<&'static str, Expected>,
) -> Payment {
    let pay_fault = dice.fault();
    let paid_at = iso_utc_micros(ordered_at + dice.rng.random_range(0..3_600_000_000));
    let (order, amount, at) = match pay_fault {
        Fault::Clean => (Some(order_id), cents(total), paid_at),
        Fault::BadValue => (Some(order_id), cents(total), "not a time".to_owned()),
        Fault::WrongType => (Some(order_id), "twelve euros".to_owned(), paid_at),
        Fault::Missing => (None, cents(total), paid_at),
    };
    expect(expected, "payments", pay_fault);
    let method = dice.pick(METHODS).to_owned();
    (format!("PAY-{order_id:07}"), order, method, amount, at)
}

/// The landing files of orders, order items and payments.
fn order_files(
    orders: Vec<String>,
    items: Vec<String>,
    payments: Vec<Payment>,
) -> Vec<GeneratedFile> {
    let mut files = Vec::new();
    for (index, chunk) in chunks(orders, 3).into_iter().enumerate() {
        files.push(GeneratedFile {
            key: format!("landing/orders/orders-{index:03}.jsonl"),
            bytes: chunk.concat().into_bytes(),
        });
    }
    let header = "order_id,line_number,product_sku,quantity,unit_price\n";
    for (index, chunk) in chunks(items, 2).into_iter().enumerate() {
        let body = format!("{header}{}", chunk.concat());
        files.push(if index == 1 {
            GeneratedFile {
                key: format!("landing/order_items/order-items-{index:03}.csv.zst"),
                bytes: zstd::encode_all(body.as_bytes(), 3).expect("compressing in memory"),
            }
        } else {
            GeneratedFile {
                key: format!("landing/order_items/order-items-{index:03}.csv"),
                bytes: body.into_bytes(),
            }
        });
    }
    for (index, chunk) in chunks(payments, 2).into_iter().enumerate() {
        files.push(GeneratedFile {
            key: format!("landing/payments/payments-{index:03}.parquet"),
            bytes: payments_parquet(&chunk),
        });
    }
    files
}

/// Order status events for the stream.
fn events(
    dice: &mut Dice,
    size: &DemoSize,
    expected: &mut BTreeMap<&'static str, Expected>,
) -> Vec<OutgoingRecord> {
    let mut events = Vec::with_capacity(size.events);
    let orders_total = size.orders.max(1) as i64;
    for n in 1..=size.events {
        let fault = dice.fault();
        let order_id = dice.rng.random_range(1..=orders_total);
        let status = dice.pick(EVENT_STATUSES);
        let occurred_at = iso_utc_micros(dice.time_micros());
        let data = match fault {
            Fault::Clean => format!(
                r#"{{"event_type":"order_status_changed","event_id":"evt-{n:07}","order_id":{order_id},"status":"{status}","occurred_at":"{occurred_at}"}}"#
            ),
            Fault::BadValue => format!(
                r#"{{"event_type":"order_status_changed","event_id":"evt-{n:07}","order_id":{order_id},"status":"#
            ),
            Fault::WrongType => format!(
                r#"{{"event_type":"order_status_changed","event_id":"evt-{n:07}","order_id":"no. {order_id}","status":"{status}","occurred_at":"{occurred_at}"}}"#
            ),
            Fault::Missing => format!(
                r#"{{"event_type":"order_status_changed","event_id":"evt-{n:07}","order_id":{order_id},"occurred_at":"{occurred_at}"}}"#
            ),
        };
        expect(expected, "order_status_events", fault);
        events.push(OutgoingRecord {
            partition_key: format!("order-{order_id}"),
            data: Bytes::from(data),
        });
    }
    events
}

/// Payments as a Parquet export whose amount and time columns are text, as many
/// providers write them; the processor converts (or rejects) them.
fn payments_parquet(rows: &[Payment]) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("payment_id", DataType::Utf8, false),
        Field::new("order_id", DataType::Int64, true),
        Field::new("method", DataType::Utf8, true),
        Field::new("amount", DataType::Utf8, true),
        Field::new("paid_at", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.0.as_str()),
        )),
        Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.2.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.3.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.4.as_str()),
        )),
    ];
    let batch =
        RecordBatch::try_new(Arc::clone(&schema), columns).expect("columns match the schema");
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).expect("a plain schema");
    writer.write(&batch).expect("writing to memory");
    writer.close().expect("writing to memory");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_data_and_counts_add_up() {
        let size = DemoSize {
            customers: 300,
            orders: 500,
            events: 400,
            dirty_share: 0.1,
            seed: 7,
        };
        let (a, b) = (generate(&size), generate(&size));
        assert_eq!(a.files.len(), b.files.len());
        for (x, y) in a.files.iter().zip(&b.files) {
            assert_eq!((&x.key, &x.bytes), (&y.key, &y.bytes));
        }
        assert_eq!(a.events, b.events);
        let customers = a.expected["customers"];
        assert_eq!(customers.rows + customers.rejected, 300);
        assert!(
            customers.rejected > 10 && customers.rejected < 60,
            "{customers:?}"
        );
        let events = a.expected["order_status_events"];
        assert_eq!(events.rows + events.rejected, 400);
        assert_eq!(
            a.expected["orders"].rows + a.expected["orders"].rejected,
            500
        );
        let other = generate(&DemoSize { seed: 8, ..size });
        assert_ne!(other.events, a.events, "another seed, other data");
    }
}
