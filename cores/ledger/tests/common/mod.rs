//! Helpers shared by the ledger tests.
#![allow(dead_code)]

use basalt_ledger_core::*;

pub fn usd() -> Currency {
    Currency::new("USD").unwrap()
}

pub fn eur() -> Currency {
    Currency::new("EUR").unwrap()
}

pub fn account(id: u128, currency: Currency, flags: AccountFlags) -> NewAccount {
    NewAccount { id, currency, flags, user_data: 0 }
}

pub const PLAIN: AccountFlags =
    AccountFlags { debits_must_not_exceed_credits: false, credits_must_not_exceed_debits: false, history: true };
pub const WALLET: AccountFlags =
    AccountFlags { debits_must_not_exceed_credits: true, credits_must_not_exceed_debits: false, history: true };
pub const CAPPED: AccountFlags =
    AccountFlags { debits_must_not_exceed_credits: false, credits_must_not_exceed_debits: true, history: true };

/// Accounts: 1 plain USD, 2 wallet USD (debits ≤ credits), 3 capped USD (credits ≤ debits),
/// 4 plain USD without history, 5 wallet USD without history, 6 plain EUR. All but 4 and 5
/// keep a history.
pub fn ledger() -> Ledger {
    let mut l = Ledger::new();
    let no_history = |f: AccountFlags| AccountFlags { history: false, ..f };
    let results = l.create_accounts(
        1,
        &[
            account(1, usd(), PLAIN),
            account(2, usd(), WALLET),
            account(3, usd(), CAPPED),
            account(4, usd(), no_history(PLAIN)),
            account(5, usd(), no_history(WALLET)),
            account(6, eur(), PLAIN),
        ],
    );
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    l
}

/// The balances of `account` just after timestamp `at`, recomputed from the transfer list and
/// the pending statuses alone.
pub fn recompute(l: &Ledger, account: u128, at: u64) -> Balances {
    let mut b = Balances::default();
    for t in l.transfers().filter(|t| t.timestamp <= at) {
        let (debit, credit) = (t.debit_account_id == account, t.credit_account_id == account);
        if !debit && !credit {
            continue;
        }
        let pending = if t.flags.pending {
            let resolved_at = match l.pending_status(t.id).unwrap() {
                PendingStatus::Pending => u64::MAX,
                PendingStatus::Posted { transfer_id } | PendingStatus::Voided { transfer_id } => {
                    l.transfer(transfer_id).unwrap().timestamp
                }
                PendingStatus::Expired { timestamp } => timestamp,
            };
            if resolved_at <= at {
                continue;
            }
            true
        } else if t.flags.void_pending {
            continue;
        } else {
            false
        };
        let column = match (debit, pending) {
            (true, true) => &mut b.debits_pending,
            (true, false) => &mut b.debits_posted,
            (false, true) => &mut b.credits_pending,
            (false, false) => &mut b.credits_posted,
        };
        *column += t.amount;
    }
    b
}

/// Σ debits == Σ credits, pending and posted separately; every account within its limits.
pub fn check_balanced(l: &Ledger) {
    let (mut dp, mut dq, mut cp, mut cq) = (0u128, 0u128, 0u128, 0u128);
    for a in l.accounts() {
        dp += a.debits_pending;
        dq += a.debits_posted;
        cp += a.credits_pending;
        cq += a.credits_posted;
        if a.flags.debits_must_not_exceed_credits {
            assert!(a.debits_pending + a.debits_posted <= a.credits_posted, "account {} overdrawn: {a:?}", a.id);
        }
        if a.flags.credits_must_not_exceed_debits {
            assert!(a.credits_pending + a.credits_posted <= a.debits_posted, "account {} over cap: {a:?}", a.id);
        }
    }
    assert_eq!(dp, cp, "pending debits != pending credits");
    assert_eq!(dq, cq, "posted debits != posted credits");
}
