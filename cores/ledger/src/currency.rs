//! [`Currency`]: a three-letter currency code, and the fixed ISO 4217 table of the currencies
//! payment intents accept, with their minor-unit exponents.
//!
//! The ledger accepts any well-formed code (three uppercase ASCII letters): a ledger may keep
//! loyalty points or an internal unit as well as money. Payment intents accept only codes in
//! [`ISO_4217`], because their amounts are in the currency's minor unit and the exponent says
//! what that unit is (2 for USD cents, 0 for JPY, 3 for KWD fils).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// ISO 4217 codes with their minor-unit exponents (digits after the decimal point), sorted by
/// code. Zero-decimal currencies (exponent 0) take amounts in whole units: `JPY 500` is ¥500.
/// Three-decimal currencies (BHD, JOD, KWD, OMR, TND) take thousandths.
pub const ISO_4217: &[(&str, u8)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PEN", 2),
    ("PHP", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("VND", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("ZAR", 2),
];

/// A currency code: exactly three uppercase ASCII letters (`"USD"`). Serialized as that string;
/// deserializing validates it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

/// A currency code that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    /// Not three uppercase ASCII letters.
    #[error("invalid currency code {0:?}: expected three uppercase letters such as \"USD\"")]
    Malformed(String),
    /// Well-formed but not in [`ISO_4217`].
    #[error("unsupported currency {0:?}")]
    Unsupported(String),
}

impl Currency {
    /// A well-formed code: three uppercase ASCII letters. Not checked against [`ISO_4217`].
    pub fn new(code: &str) -> Result<Currency, CurrencyError> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Currency([a, b, c])),
            _ => Err(CurrencyError::Malformed(code.to_owned())),
        }
    }

    /// A code from [`ISO_4217`], in either case (`"usd"` or `"USD"`, as Stripe's API spells it
    /// lowercase); the result is uppercase.
    pub fn parse_iso(code: &str) -> Result<Currency, CurrencyError> {
        let upper = code.to_ascii_uppercase();
        let currency = Currency::new(&upper).map_err(|_| CurrencyError::Malformed(code.to_owned()))?;
        match currency.exponent() {
            Some(_) => Ok(currency),
            None => Err(CurrencyError::Unsupported(code.to_owned())),
        }
    }

    /// The code, e.g. `"USD"`.
    pub fn as_str(&self) -> &str {
        // Only constructed from three ASCII letters, so this is always valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// The ISO 4217 minor-unit exponent, or `None` if the code is not in [`ISO_4217`].
    pub fn exponent(&self) -> Option<u8> {
        let code = self.as_str();
        ISO_4217.binary_search_by(|(c, _)| (*c).cmp(code)).ok().map(|i| ISO_4217[i].1)
    }

    /// Whether amounts are in whole units (exponent 0: JPY, KRW, CLP, VND, …).
    pub fn is_zero_decimal(&self) -> bool {
        self.exponent() == Some(0)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Currency, D::Error> {
        // Borrowed when the format allows: a currency per transfer is read in the hot path, so
        // no `String` is allocated for it.
        struct Code;
        impl serde::de::Visitor<'_> for Code {
            type Value = Currency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a three-letter uppercase currency code")
            }
            fn visit_str<E: serde::de::Error>(self, code: &str) -> Result<Currency, E> {
                Currency::new(code).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_well_formed() {
        assert!(ISO_4217.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(ISO_4217.iter().all(|(c, e)| Currency::new(c).is_ok() && *e <= 3));
        assert!(ISO_4217.len() >= 30);
    }

    #[test]
    fn codes() {
        assert_eq!(Currency::new("USD").unwrap().as_str(), "USD");
        assert!(Currency::new("usd").is_err());
        assert!(Currency::new("US").is_err());
        assert!(Currency::new("USDT").is_err());
        assert!(Currency::new("ÜSD").is_err());
        assert_eq!(Currency::new("XPT").unwrap().exponent(), None);
        assert_eq!(Currency::parse_iso("jpy").unwrap().exponent(), Some(0));
        assert!(Currency::parse_iso("jpy").unwrap().is_zero_decimal());
        assert_eq!(Currency::parse_iso("KWD").unwrap().exponent(), Some(3));
        assert_eq!(Currency::parse_iso("XPT"), Err(CurrencyError::Unsupported("XPT".into())));
        assert!(matches!(Currency::parse_iso("u$d"), Err(CurrencyError::Malformed(_))));
    }
}
