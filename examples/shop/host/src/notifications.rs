//! notifications: tells people what happened. "Sending" is a row and a line; a real one
//! would hand the message to a mail or SMS vendor.
//!
//! ```text
//! GET  /notifications   every notification, newest first
//! ```
//!
//! Takes order.confirmed and order.cancelled (orders.v1) and stock.low (inventory.v1); each
//! is sent once, however often it is delivered.

use crate::cents;
use crate::events::{Item, OrderCancelled, OrderConfirmed, StockLow};
use serde_json::{Value, json};
use switchyard_sdk::axum::extract::State;
use switchyard_sdk::axum::routing::get;
use switchyard_sdk::axum::{Json, Router};
use switchyard_sdk::sqlx::{self, Row as _, Sqlite};
use switchyard_sdk::{Context, Handle, HandlerError, Service};

pub fn service() -> Service<Sqlite> {
    Service::new("notifications")
        .source("/shop/notifications")
        .on(|ctx, e: OrderConfirmed| async move {
            let msg = format!(
                "Your order {} ({}) is confirmed: {} charged.",
                e.order,
                items(&e.items),
                cents(e.total_cents)
            );
            send(ctx, &e.customer, &msg).await
        })
        .on(|ctx, e: OrderCancelled| async move {
            let msg = format!(
                "Sorry, your order {} ({}) was cancelled: {}.",
                e.order,
                items(&e.items),
                e.reason
            );
            send(ctx, &e.customer, &msg).await
        })
        .on(|ctx, e: StockLow| async move {
            let msg = format!(
                "Restock {}: {} left (threshold {}), please order {}.",
                e.sku, e.available, e.threshold, e.restock_qty
            );
            send(ctx, "purchasing", &msg).await
        })
        .routes(|h| {
            Router::new()
                .route("/notifications", get(list))
                .with_state(h)
        })
}

fn items(items: &[Item]) -> String {
    items
        .iter()
        .map(|i| format!("{} {}", i.qty, i.sku))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn send(ctx: Context<Sqlite>, recipient: &str, message: &str) -> Result<(), HandlerError> {
    let mut tx = ctx.tx().await?;
    sqlx::query(
        "INSERT INTO notifications (event_id, event_type, recipient, message) VALUES (?, ?, ?, ?)",
    )
    .bind(ctx.event().id())
    .bind(ctx.event().ty())
    .bind(recipient)
    .bind(message)
    .execute(&mut *tx)
    .await?;
    drop(tx);
    ctx.log().line(format_args!("to {recipient}: {message}"));
    Ok(())
}

async fn list(
    State(h): State<Handle<Sqlite>>,
) -> Result<Json<Value>, (switchyard_sdk::axum::http::StatusCode, String)> {
    let rows = sqlx::query(
        "SELECT id, event_type, recipient, message, sent_at FROM notifications \
         ORDER BY id DESC LIMIT 100",
    )
    .fetch_all(h.db())
    .await
    .map_err(|e| {
        (
            switchyard_sdk::axum::http::StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )
    })?;
    let notifications: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<i64, _>("id"),
                "event_type": r.get::<String, _>("event_type"),
                "recipient": r.get::<String, _>("recipient"),
                "message": r.get::<String, _>("message"),
                "sent_at": r.get::<String, _>("sent_at"),
            })
        })
        .collect();
    Ok(Json(json!({ "notifications": notifications })))
}
