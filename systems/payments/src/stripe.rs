//! Stripe's wire shapes: error objects (`{"error": {"type", "code", "message", "param"}}` with
//! Stripe's statuses) and the JSON of payment intents and refunds. Everything here is a pure
//! function of the replicated state, so a response rendered inside the state machine (and
//! stored for an idempotency key) is byte-for-byte the same on every replica.

use basalt_ledger_core::{
    AttemptKind, AttemptStatus, CaptureMethod, IntentError, IntentStatus, RefundStatus, StoredResponse,
};
use serde_json::{Value, json};

use crate::model::IntentRecord;

/// A Stripe-shaped error with its HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeError {
    pub status: u16,
    /// `invalid_request_error`, `card_error`, `idempotency_error`, `api_error`.
    pub kind: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub param: Option<String>,
    /// For card errors: the decline code and the intent after the decline.
    pub card: Option<Box<(String, Value)>>,
}

impl StripeError {
    pub fn invalid_request(status: u16, code: &str, message: impl Into<String>, param: Option<&str>) -> StripeError {
        StripeError {
            status,
            kind: "invalid_request_error",
            code: Some(code.into()),
            message: message.into(),
            param: param.map(str::to_owned),
            card: None,
        }
    }

    pub fn missing(param: &str) -> StripeError {
        StripeError::invalid_request(400, "parameter_missing", format!("Missing required param: {param}."), Some(param))
    }

    pub fn not_found(what: &str, id: &str, param: &str) -> StripeError {
        StripeError::invalid_request(404, "resource_missing", format!("No such {what}: '{id}'"), Some(param))
    }

    pub fn idempotency(status: u16, code: &str, message: impl Into<String>) -> StripeError {
        StripeError { kind: "idempotency_error", ..StripeError::invalid_request(status, code, message, None) }
    }

    /// A failure of Basalt itself (no leader, a timeout): `api_error`, never stored.
    pub fn api(status: u16, code: &str, message: impl Into<String>) -> StripeError {
        StripeError { kind: "api_error", ..StripeError::invalid_request(status, code, message, None) }
    }

    /// A refused intent transition (the core's Stripe-shaped error).
    pub fn from_intent(e: &IntentError) -> StripeError {
        let code = e.code.as_str();
        let status = if code == "resource_missing" { 404 } else { 400 };
        StripeError::invalid_request(status, code, e.message.clone(), e.param)
    }

    pub fn body(&self) -> Value {
        let mut inner = json!({"type": self.kind, "code": self.code, "message": self.message, "param": self.param});
        if let Some(card) = &self.card {
            inner["decline_code"] = json!(card.0);
            inner["payment_intent"] = card.1.clone();
        }
        json!({ "error": inner })
    }

    pub fn to_stored(&self) -> StoredResponse {
        StoredResponse { status: self.status, headers: Vec::new(), body: self.body().to_string() }
    }
}

/// A 200 with a JSON body.
pub fn ok(body: &Value) -> StoredResponse {
    StoredResponse { status: 200, headers: Vec::new(), body: body.to_string() }
}

pub fn charge_id(seq: u64, attempt: u32) -> String {
    format!("ch_{seq:012x}{attempt:04x}")
}

pub fn refund_id(seq: u64, refund: u32) -> String {
    format!("re_{seq:012x}{refund:04x}")
}

/// `(intent seq, refund number)` from a refund id.
pub fn parse_refund_id(id: &str) -> Option<(u64, u32)> {
    let hex = id.strip_prefix("re_")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((u64::from_str_radix(&hex[..12], 16).ok()?, u32::from_str_radix(&hex[12..], 16).ok()?))
}

fn status_str(s: IntentStatus) -> &'static str {
    s.as_str()
}

/// The charge Stripe would show as `latest_charge`: the last charge or authorization attempt
/// that reached the provider's answer.
fn latest_charge(r: &IntentRecord) -> Option<String> {
    r.intent
        .attempts
        .iter()
        .rev()
        .find(|a| a.kind != AttemptKind::Capture && !a.status.is_open())
        .map(|a| charge_id(r.seq, a.id.0))
}

/// The intent as Stripe's `payment_intent` object.
pub fn intent_json(r: &IntentRecord) -> Value {
    let i = &r.intent;
    let last_error = i.last_payment_error.as_ref().map(|e| {
        json!({
            "type": "card_error",
            "code": e.code,
            "decline_code": e.decline_code,
            "message": "Your card was declined.",
            "charge": charge_id(r.seq, e.attempt.0),
        })
    });
    json!({
        "id": r.id,
        "object": "payment_intent",
        "amount": i.amount,
        "amount_capturable": i.amount_capturable,
        "amount_received": i.amount_received,
        "amount_refunded": i.amount_refunded,
        "capture_method": match i.capture_method { CaptureMethod::Automatic => "automatic", CaptureMethod::Manual => "manual" },
        "cancellation_reason": i.cancellation_reason,
        "client_secret": r.client_secret,
        "confirmation_method": "automatic",
        "created": r.created_ms / 1000,
        "currency": i.currency.as_str().to_ascii_lowercase(),
        "description": r.description,
        "last_payment_error": last_error,
        "latest_charge": latest_charge(r),
        "livemode": false,
        "metadata": r.metadata,
        "next_action": Value::Null,
        "payment_method": i.payment_method,
        "payment_method_types": ["card"],
        "status": status_str(i.status),
    })
}

/// Refund `n` of the intent as Stripe's `refund` object.
pub fn refund_json(r: &IntentRecord, n: u32) -> Value {
    let Some(refund) = r.intent.refunds.get(n as usize) else { return Value::Null };
    let meta = r.refund_meta.get(n as usize);
    let money_attempt = r
        .intent
        .attempts
        .iter()
        .rev()
        .find(|a| a.status == AttemptStatus::Succeeded && a.kind != AttemptKind::Capture)
        .map(|a| charge_id(r.seq, a.id.0));
    json!({
        "id": refund_id(r.seq, n),
        "object": "refund",
        "amount": refund.amount,
        "charge": money_attempt,
        "created": meta.map_or(0, |m| m.created_ms / 1000),
        "currency": r.intent.currency.as_str().to_ascii_lowercase(),
        "failure_reason": refund.failure_reason,
        "metadata": meta.map(|m| m.metadata.clone()).unwrap_or_default(),
        "payment_intent": r.id,
        "status": match refund.status {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
            RefundStatus::Canceled => "canceled",
        },
    })
}

/// The response to a confirm or capture whose attempt `attempt` has an outcome: the intent,
/// or Stripe's 402 `card_error` (with the intent inside) if it was declined.
pub fn attempt_response(r: &IntentRecord, attempt: u32) -> StoredResponse {
    let declined = r.intent.attempts.get(attempt as usize).and_then(|a| match &a.status {
        AttemptStatus::Declined { code } => Some(code.clone()),
        _ => None,
    });
    match declined {
        Some(code) => {
            let capture = r.intent.attempts.get(attempt as usize).is_some_and(|a| a.kind == AttemptKind::Capture);
            StripeError {
                status: 402,
                kind: "card_error",
                code: Some("card_declined".into()),
                message: if capture { "The capture was declined." } else { "Your card was declined." }.into(),
                param: None,
                card: Some(Box::new((code, intent_json(r)))),
            }
            .to_stored()
        }
        None => ok(&intent_json(r)),
    }
}
