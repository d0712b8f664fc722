//! payments: charges each order whose stock is reserved, once.
//!
//! ```text
//! GET  /payments          every payment and its outcome
//! GET  /payments/{order}  the payment of one order (404 while there is none)
//! ```
//!
//! A stand-in for a card processor with a fixed rule, so the demo repeats: customers whose
//! name starts with "broke" are declined, and so is any total over `PAYMENT_LIMIT_CENTS`
//! (50000 unless service.toml says otherwise). Publishes payment.captured or payment.failed
//! on payments.v1, keyed by the order id, with ids derived from the order so that charging
//! the same order twice publishes one event.

use crate::cents;
use crate::events::{PaymentCaptured, PaymentFailed, StockReserved};
use serde_json::{Value, json};
use switchyard_sdk::axum::extract::{Path, State};
use switchyard_sdk::axum::routing::get;
use switchyard_sdk::axum::{Json, Router};
use switchyard_sdk::sqlx::{self, Row as _, Sqlite};
use switchyard_sdk::{Context, Handle, HandlerError, Service};

pub fn service() -> Service<Sqlite> {
    Service::new("payments")
        .source("/shop/payments")
        .on(on_stock_reserved)
        .routes(|h| {
            Router::new()
                .route("/payments", get(list))
                .route("/payments/{order}", get(one))
                .with_state(h)
        })
}

/// `None` when the payment goes through, else why not.
fn decide(customer: &str, amount: i64, limit: i64) -> Option<String> {
    if customer.to_lowercase().starts_with("broke") {
        return Some("card declined".into());
    }
    if amount > limit {
        return Some(format!(
            "{} is over the {} limit",
            cents(amount),
            cents(limit)
        ));
    }
    None
}

async fn on_stock_reserved(ctx: Context<Sqlite>, ev: StockReserved) -> Result<(), HandlerError> {
    let limit = match ctx.env("PAYMENT_LIMIT_CENTS") {
        None => 50_000,
        Some(v) => v.parse().map_err(|_| {
            HandlerError::retry(format!("PAYMENT_LIMIT_CENTS {v:?} is not a number"))
        })?,
    };
    let (order, customer, amount) = (ev.order, ev.customer, ev.total_cents);
    let mut tx = ctx.tx().await?;
    let charged = sqlx::query("SELECT 1 FROM payments WHERE order_id = ?")
        .bind(&order)
        .fetch_optional(&mut *tx)
        .await?;
    if charged.is_some() {
        ctx.log()
            .line(format_args!("order {order} already charged"));
        return Ok(());
    }
    let line = match decide(&customer, amount, limit) {
        None => {
            let payment = format!("pay-{:08x}", rand::random::<u32>());
            sqlx::query(
                "INSERT INTO payments (order_id, payment_id, customer, amount_cents, state) \
                 VALUES (?, ?, ?, ?, 'captured')",
            )
            .bind(&order)
            .bind(&payment)
            .bind(&customer)
            .bind(amount)
            .execute(&mut *tx)
            .await?;
            drop(tx);
            ctx.publish_as(
                format!("payment.captured/{order}"),
                &PaymentCaptured {
                    order: order.clone(),
                    payment: payment.clone(),
                    amount_cents: amount,
                },
            )?;
            format!(
                "order {order}: {} captured from {customer} ({payment})",
                cents(amount)
            )
        }
        Some(reason) => {
            sqlx::query(
                "INSERT INTO payments (order_id, customer, amount_cents, state, reason) \
                 VALUES (?, ?, ?, 'failed', ?)",
            )
            .bind(&order)
            .bind(&customer)
            .bind(amount)
            .bind(&reason)
            .execute(&mut *tx)
            .await?;
            drop(tx);
            ctx.publish_as(
                format!("payment.failed/{order}"),
                &PaymentFailed {
                    order: order.clone(),
                    amount_cents: amount,
                    reason: reason.clone(),
                },
            )?;
            format!(
                "order {order}: payment of {} by {customer} failed: {reason}",
                cents(amount)
            )
        }
    };
    ctx.log().line(line);
    Ok(())
}

type ApiError = (switchyard_sdk::axum::http::StatusCode, Json<Value>);

fn unavailable(e: sqlx::Error) -> ApiError {
    (
        switchyard_sdk::axum::http::StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"title": "database unavailable", "detail": e.to_string()})),
    )
}

const COLUMNS: &str = "order_id, payment_id, customer, amount_cents, state, reason, at";

fn payment_json(r: &sqlx::sqlite::SqliteRow) -> Value {
    json!({
        "order_id": r.get::<String, _>("order_id"),
        "payment_id": r.get::<Option<String>, _>("payment_id"),
        "customer": r.get::<String, _>("customer"),
        "amount_cents": r.get::<i64, _>("amount_cents"),
        "state": r.get::<String, _>("state"),
        "reason": r.get::<Option<String>, _>("reason"),
        "at": r.get::<String, _>("at"),
    })
}

async fn list(State(h): State<Handle<Sqlite>>) -> Result<Json<Value>, ApiError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payments ORDER BY at DESC LIMIT 100"
    ))
    .fetch_all(h.db())
    .await
    .map_err(unavailable)?;
    let payments: Vec<Value> = rows.iter().map(payment_json).collect();
    Ok(Json(json!({ "payments": payments })))
}

async fn one(
    State(h): State<Handle<Sqlite>>,
    Path(order): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payments WHERE order_id = ?"
    ))
    .bind(&order)
    .fetch_optional(h.db())
    .await
    .map_err(unavailable)?;
    match row {
        Some(r) => Ok(Json(payment_json(&r))),
        None => Err((
            switchyard_sdk::axum::http::StatusCode::NOT_FOUND,
            Json(json!({"title": "no payment", "detail": format!("no payment for order {order}")})),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_rule() {
        assert_eq!(decide("ada", 12_500, 50_000), None);
        assert_eq!(
            decide("broke-carl", 100, 50_000).as_deref(),
            Some("card declined")
        );
        assert_eq!(
            decide("dora", 75_000, 50_000).as_deref(),
            Some("750.00 is over the 500.00 limit")
        );
    }
}
