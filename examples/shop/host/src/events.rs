//! The shop's events these services take or publish (the Python services publish and take
//! the same JSON).

use serde::{Deserialize, Serialize};
use switchyard_sdk::Event;

/// One line of an order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub qty: i64,
}

#[derive(Clone, Debug, Event, Serialize, Deserialize)]
#[event(type = "stock.reserved", topic = "inventory.v1", key = order)]
pub struct StockReserved {
    pub order: String,
    pub customer: String,
    pub total_cents: i64,
}

#[derive(Clone, Debug, Event, Serialize, Deserialize)]
#[event(type = "stock.low", topic = "inventory.v1", key = sku)]
pub struct StockLow {
    pub sku: String,
    pub available: i64,
    pub threshold: i64,
    pub restock_qty: i64,
}

#[derive(Clone, Debug, Event, Serialize, Deserialize)]
#[event(type = "payment.captured", topic = "payments.v1", key = order)]
pub struct PaymentCaptured {
    pub order: String,
    pub payment: String,
    pub amount_cents: i64,
}

#[derive(Clone, Debug, Event, Serialize, Deserialize)]
#[event(type = "payment.failed", topic = "payments.v1", key = order)]
pub struct PaymentFailed {
    pub order: String,
    pub amount_cents: i64,
    pub reason: String,
}

#[derive(Clone, Debug, Event, Serialize, Deserialize)]
#[event(type = "order.confirmed", topic = "orders.v1", key = order)]
pub struct OrderConfirmed {
    pub order: String,
    pub customer: String,
    pub items: Vec<Item>,
    pub total_cents: i64,
}

#[derive(Clone, Debug, Event, Serialize, Deserialize)]
#[event(type = "order.cancelled", topic = "orders.v1", key = order)]
pub struct OrderCancelled {
    pub order: String,
    pub customer: String,
    pub items: Vec<Item>,
    pub reason: String,
}
