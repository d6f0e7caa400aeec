//! Request parameters as Stripe's API takes them: form-encoded bodies
//! (`amount=2000&currency=usd&metadata[order]=7`, what Stripe's clients send) or JSON objects,
//! flattened into one sorted map of `name → text`, then taken field by field with Stripe's
//! errors (`parameter_missing`, `parameter_invalid_integer`, `parameter_unknown` …). The same
//! sorted map gives the request's fingerprint for idempotency keys.

use std::collections::BTreeMap;

use basalt_ledger_core::Fingerprint;
use serde_json::Value;

use crate::stripe::StripeError;

/// Parameters the API accepts and ignores (Stripe features outside this simulation), so
/// that clients which send them still work.
const IGNORED: &[&str] = &[
    "automatic_payment_methods[enabled]",
    "automatic_payment_methods[allow_redirects]",
    "confirmation_method",
    "customer",
    "off_session",
    "receipt_email",
    "return_url",
    "setup_future_usage",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "use_stripe_sdk",
    "reason",
];

/// The parameters of one request, flattened and sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    map: BTreeMap<String, String>,
}

/// Flatten `value` under `prefix` as Stripe's form encoding spells nested fields.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Null => {}
        Value::Bool(b) => {
            out.insert(prefix.to_owned(), b.to_string());
        }
        Value::Number(n) => {
            out.insert(prefix.to_owned(), n.to_string());
        }
        Value::String(s) => {
            out.insert(prefix.to_owned(), s.clone());
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::Object(obj) => {
            for (k, v) in obj {
                let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}[{k}]") };
                flatten(&name, v, out);
            }
        }
    }
}

impl Params {
    /// Parse a body by its content type: JSON when it says so (or looks like an object),
    /// form encoding otherwise. Query parameters (for GETs) come the same way as a form.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Params, StripeError> {
        let trimmed = body.iter().skip_while(|b| b.is_ascii_whitespace()).copied().next();
        let is_json = content_type.is_some_and(|c| c.starts_with("application/json")) || trimmed == Some(b'{');
        let mut map = BTreeMap::new();
        if is_json {
            if trimmed.is_none() {
                return Ok(Params::default());
            }
            let value: Value = serde_json::from_slice(body).map_err(|e| {
                StripeError::invalid_request(400, "parameter_invalid", format!("Invalid JSON body: {e}"), None)
            })?;
            if !value.is_object() {
                return Err(StripeError::invalid_request(
                    400,
                    "parameter_invalid",
                    "The body must be a JSON object.",
                    None,
                ));
            }
            flatten("", &value, &mut map);
        } else {
            for (k, v) in form_urlencoded::parse(body) {
                map.insert(k.into_owned(), v.into_owned());
            }
        }
        Ok(Params { map })
    }

    /// From a query string.
    pub fn from_query(query: Option<&str>) -> Params {
        let map = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Params { map }
    }

    /// A stable hash of method, path and every parameter (sorted): two requests with the same
    /// fingerprint are the same request. Four independently seeded 64-bit FNV-1a hashes with a
    /// final avalanche; not cryptographic (keys are per API key, so a collision needs the
    /// caller to attack itself).
    pub fn fingerprint(&self, method: &str, path: &str) -> Fingerprint {
        let mut bytes = Vec::new();
        for part in [method, path] {
            bytes.extend_from_slice(part.as_bytes());
            bytes.push(0);
        }
        for (k, v) in &self.map {
            bytes.extend_from_slice(k.as_bytes());
            bytes.push(1);
            bytes.extend_from_slice(v.as_bytes());
            bytes.push(0);
        }
        let mut out = [0u8; 32];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for b in &bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            chunk.copy_from_slice(&mix(h).to_be_bytes());
        }
        Fingerprint(out)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A text parameter.
    pub fn take_str(&mut self, name: &'static str) -> Option<String> {
        self.map.remove(name)
    }

    /// A required text parameter.
    pub fn require_str(&mut self, name: &'static str) -> Result<String, StripeError> {
        self.take_str(name).ok_or_else(|| StripeError::missing(name))
    }

    /// An integer parameter (Stripe's `parameter_invalid_integer` for anything else).
    pub fn take_u64(&mut self, name: &'static str) -> Result<Option<u64>, StripeError> {
        let Some(v) = self.map.remove(name) else { return Ok(None) };
        match v.trim().parse::<i128>() {
            Ok(n) if n < 0 => Err(StripeError::invalid_request(
                400,
                "parameter_invalid_integer",
                format!("Invalid integer: {v}. This value must be greater than or equal to 0."),
                Some(name),
            )),
            Ok(n) => u64::try_from(n).map(Some).map_err(|_| {
                StripeError::invalid_request(
                    400,
                    "parameter_invalid_integer",
                    format!("Invalid integer: {v}"),
                    Some(name),
                )
            }),
            Err(_) => Err(StripeError::invalid_request(
                400,
                "parameter_invalid_integer",
                format!("Invalid integer: {v}"),
                Some(name),
            )),
        }
    }

    /// A required integer parameter.
    pub fn require_u64(&mut self, name: &'static str) -> Result<u64, StripeError> {
        self.take_u64(name)?.ok_or_else(|| StripeError::missing(name))
    }

    /// A boolean parameter (`true` / `false`).
    pub fn take_bool(&mut self, name: &'static str) -> Result<Option<bool>, StripeError> {
        match self.map.remove(name).as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(StripeError::invalid_request(
                400,
                "parameter_invalid_boolean",
                format!("Invalid boolean: {v}"),
                Some(name),
            )),
        }
    }

    /// `metadata[key]=value` pairs (at most 50 keys of at most 40 characters, values of at
    /// most 500, as Stripe).
    pub fn take_metadata(&mut self) -> Result<BTreeMap<String, String>, StripeError> {
        let keys: Vec<String> = self.map.keys().filter(|k| k.starts_with("metadata[")).cloned().collect();
        let mut out = BTreeMap::new();
        for k in keys {
            let v = self.map.remove(&k).unwrap_or_default();
            let Some(name) = k.strip_prefix("metadata[").and_then(|r| r.strip_suffix(']')) else {
                return Err(StripeError::invalid_request(
                    400,
                    "parameter_unknown",
                    format!("Invalid metadata key: {k}"),
                    Some("metadata"),
                ));
            };
            if name.is_empty() || name.chars().count() > 40 || v.chars().count() > 500 {
                return Err(StripeError::invalid_request(
                    400,
                    "parameter_invalid_string_length",
                    "Metadata keys must be 1 to 40 characters and values at most 500.".to_owned(),
                    Some("metadata"),
                ));
            }
            out.insert(name.to_owned(), v);
        }
        if out.len() > 50 {
            return Err(StripeError::invalid_request(
                400,
                "parameter_invalid",
                "At most 50 metadata keys.",
                Some("metadata"),
            ));
        }
        // `metadata=` (empty) clears metadata in Stripe; accept it as "none".
        self.map.remove("metadata");
        Ok(out)
    }

    /// Refuse any parameter not taken (Stripe's `parameter_unknown`), except the ignored ones
    /// and `expand[…]`.
    pub fn finish(self) -> Result<(), StripeError> {
        for k in self.map.keys() {
            let ignored = IGNORED.contains(&k.as_str())
                || k.starts_with("expand[")
                || k == "expand"
                || k.starts_with("payment_method_types[")
                || k.starts_with("payment_method_options[")
                || k.starts_with("shipping[");
            if !ignored {
                return Err(StripeError::invalid_request(
                    400,
                    "parameter_unknown",
                    format!("Received unknown parameter: {k}"),
                    Some(k.as_str()),
                ));
            }
        }
        Ok(())
    }
}

/// A 64-bit finalizer (SplitMix64's): every input bit affects every output bit.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_and_json_give_the_same_params_and_fingerprint() {
        let form = Params::parse(
            Some("application/x-www-form-urlencoded"),
            b"amount=2000&currency=usd&payment_method=pm_card_visa&metadata[order]=7",
        )
        .unwrap();
        let json = Params::parse(
            Some("application/json"),
            br#"{"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa", "metadata": {"order": 7}}"#,
        )
        .unwrap();
        assert_eq!(form, json);
        assert_eq!(form.fingerprint("POST", "/v1/payment_intents"), json.fingerprint("POST", "/v1/payment_intents"));
        let other =
            Params::parse(None, b"amount=2001&currency=usd&payment_method=pm_card_visa&metadata[order]=7").unwrap();
        assert_ne!(form.fingerprint("POST", "/v1/payment_intents"), other.fingerprint("POST", "/v1/payment_intents"));
        assert_ne!(form.fingerprint("POST", "/v1/payment_intents"), form.fingerprint("POST", "/v1/refunds"));
    }

    #[test]
    fn typed_params_give_stripe_errors() {
        let mut p = Params::parse(None, b"amount=12.5&currency=usd&bogus=1").unwrap();
        let e = p.take_u64("amount").unwrap_err();
        assert_eq!(
            (e.status, e.code.as_deref(), e.param.as_deref()),
            (400, Some("parameter_invalid_integer"), Some("amount"))
        );
        let mut p = Params::parse(None, b"amount=-5").unwrap();
        assert_eq!(p.take_u64("amount").unwrap_err().code.as_deref(), Some("parameter_invalid_integer"));
        let mut p = Params::parse(None, b"currency=usd").unwrap();
        assert_eq!(p.require_u64("amount").unwrap_err().code.as_deref(), Some("parameter_missing"));
        let mut p = Params::parse(None, b"currency=usd&bogus=1").unwrap();
        p.take_str("currency");
        let e = p.finish().unwrap_err();
        assert_eq!((e.code.as_deref(), e.param.as_deref()), (Some("parameter_unknown"), Some("bogus")));
    }
}
