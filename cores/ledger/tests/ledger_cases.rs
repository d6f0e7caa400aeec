//! The ledger through its public surface: accounts, every transfer error, two-phase transfers
//! and expiry, linked chains, idempotent retries, reversals, history, statements, snapshots, and
//! a batch of 10 000 transfers.

mod common;

use std::time::Instant;

use basalt_ledger_core::*;
use common::*;

use TransferError as E;

fn t(id: u128, dr: u128, cr: u128, amount: u128) -> NewTransfer {
    NewTransfer::new(id, dr, cr, amount, usd(), 1)
}

/// Applies a batch of one at `now_ms` and returns its result.
fn apply(l: &mut Ledger, now_ms: u64, transfer: NewTransfer) -> Result<(), TransferError> {
    l.apply_transfers(now_ms, &[transfer]).pop().unwrap()
}

fn balances(l: &Ledger, id: u128) -> [u128; 4] {
    let a = l.account(id).unwrap();
    [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted]
}

#[test]
fn accounts_are_created_once_with_increasing_timestamps() {
    let mut l = Ledger::new();
    let a = account(7, usd(), PLAIN);
    assert_eq!(l.create_accounts(5, &[a]), vec![Ok(())]);
    let created = l.account(7).unwrap().created_at;
    assert_eq!(created, 5 * NS_PER_MS);
    let r = l.create_accounts(
        3, // the clock went backwards: timestamps still increase
        &[
            a,
            NewAccount { user_data: 9, ..a },
            account(0, usd(), PLAIN),
            account(u128::MAX, usd(), PLAIN),
            account(8, usd(), AccountFlags { credits_must_not_exceed_debits: true, ..WALLET }),
            account(9, eur(), PLAIN),
        ],
    );
    assert_eq!(
        r,
        vec![
            Err(AccountError::Exists),
            Err(AccountError::ExistsWithDifferentFields),
            Err(AccountError::IdMustNotBeZero),
            Err(AccountError::IdMustNotBeIntMax),
            Err(AccountError::FlagsAreMutuallyExclusive),
            Ok(()),
        ]
    );
    assert_eq!(l.account(9).unwrap().created_at, created + 1);
    assert_eq!(l.last_timestamp(), created + 1);
    assert_eq!(AccountError::ExistsWithDifferentFields.code(), "exists_with_different_fields");
}

#[test]
fn a_transfer_moves_debits_to_credits() {
    let mut l = ledger();
    assert_eq!(apply(&mut l, 10, t(100, 1, 2, 70)), Ok(()));
    assert_eq!(balances(&l, 1), [0, 70, 0, 0]);
    assert_eq!(balances(&l, 2), [0, 0, 0, 70]);
    let tr = l.transfer(100).unwrap();
    assert_eq!((tr.amount, tr.timestamp), (70, 10 * NS_PER_MS));
    check_balanced(&l);
}

#[test]
fn every_validation_error() {
    let mut l = ledger();
    // Fund the wallet (2) with 100 and give the capped account (3) 50 of debits.
    assert_eq!(l.apply_transfers(2, &[t(100, 1, 2, 100), t(101, 3, 1, 50)]), vec![Ok(()), Ok(())]);
    assert_eq!(apply(&mut l, 3, t(102, 1, 2, 10).with_pending(0)), Ok(()));
    let flags = |f: TransferFlags| NewTransfer { flags: f, ..t(1, 1, 2, 1) };
    let cases: Vec<(NewTransfer, TransferError)> = vec![
        (t(0, 1, 2, 1), E::IdMustNotBeZero),
        (t(u128::MAX, 1, 2, 1), E::IdMustNotBeIntMax),
        (t(100, 1, 2, 100), E::Exists),
        (t(100, 1, 2, 99), E::ExistsWithDifferentFields),
        (
            flags(TransferFlags { pending: true, post_pending: true, ..Default::default() }),
            E::FlagsAreMutuallyExclusive,
        ),
        (
            flags(TransferFlags { void_pending: true, post_pending: true, ..Default::default() }),
            E::FlagsAreMutuallyExclusive,
        ),
        (t(1, 0, 2, 1), E::DebitAccountIdMustNotBeZero),
        (t(1, u128::MAX, 2, 1), E::DebitAccountIdMustNotBeIntMax),
        (t(1, 1, 0, 1), E::CreditAccountIdMustNotBeZero),
        (t(1, 1, u128::MAX, 1), E::CreditAccountIdMustNotBeIntMax),
        (t(1, 1, 1, 1), E::AccountsMustBeDifferent),
        (t(1, 1, 2, 0), E::AmountMustNotBeZero),
        (NewTransfer { code: 0, ..t(1, 1, 2, 1) }, E::CodeMustNotBeZero),
        (NewTransfer { pending_id: 102, ..t(1, 1, 2, 1) }, E::PendingIdMustBeZero),
        (NewTransfer { timeout_ms: 5, ..t(1, 1, 2, 1) }, E::TimeoutReservedForPendingTransfer),
        (t(1, 99, 2, 1), E::DebitAccountNotFound),
        (t(1, 1, 99, 1), E::CreditAccountNotFound),
        (t(1, 1, 6, 1), E::CurrencyMismatch),
        (NewTransfer::new(1, 1, 4, 1, eur(), 1), E::CurrencyMismatch),
        (t(1, 4, 1, u128::MAX), E::OverflowsCredits),
        (t(1, 1, 4, u128::MAX), E::OverflowsDebits),
        (t(1, 1, 4, 1).with_pending(u64::MAX), E::OverflowsTimeout),
        (t(1, 2, 1, 101), E::ExceedsCredits), // 100 credits (10 more pending do not count)
        (t(1, 1, 3, 51), E::ExceedsDebits),
        (NewTransfer::post(1, 0, 0, usd()), E::PendingIdMustNotBeZero),
        (NewTransfer::post(1, u128::MAX, 0, usd()), E::PendingIdMustNotBeIntMax),
        (NewTransfer::post(1, 1, 0, usd()), E::PendingIdMustBeDifferent),
        (NewTransfer { timeout_ms: 1, ..NewTransfer::post(1, 102, 0, usd()) }, E::TimeoutReservedForPendingTransfer),
        (NewTransfer::post(1, 99, 0, usd()), E::PendingTransferNotFound),
        (NewTransfer::post(1, 100, 0, usd()), E::PendingTransferNotPending),
        (
            NewTransfer { debit_account_id: 4, ..NewTransfer::post(1, 102, 0, usd()) },
            E::PendingTransferHasDifferentDebitAccountId,
        ),
        (
            NewTransfer { credit_account_id: 4, ..NewTransfer::post(1, 102, 0, usd()) },
            E::PendingTransferHasDifferentCreditAccountId,
        ),
        (NewTransfer::post(1, 102, 0, eur()), E::CurrencyMismatch),
        (NewTransfer { code: 2, ..NewTransfer::post(1, 102, 0, usd()) }, E::PendingTransferHasDifferentCode),
        (NewTransfer { amount: 3, ..NewTransfer::void(1, 102, usd()) }, E::PendingTransferHasDifferentAmount),
        (NewTransfer::post(1, 102, 11, usd()), E::ExceedsPendingTransferAmount),
        (
            NewTransfer {
                flags: TransferFlags { pending: true, ..Default::default() },
                ..NewTransfer::reversal(1, 100, usd())
            },
            E::ReversalMustBeSinglePhase,
        ),
        (NewTransfer { reversal_of: 100, ..NewTransfer::post(1, 102, 0, usd()) }, E::ReversalMustBeSinglePhase),
        (NewTransfer::reversal(1, 99, usd()), E::ReversedTransferNotFound),
        (NewTransfer::reversal(1, 102, usd()), E::TransferNotReversible),
        (NewTransfer { debit_account_id: 1, ..NewTransfer::reversal(1, 100, usd()) }, E::ReversalHasDifferentAccounts),
        (NewTransfer { amount: 5, ..NewTransfer::reversal(1, 100, usd()) }, E::ReversalHasDifferentAmount),
        (NewTransfer::reversal(1, 100, eur()), E::CurrencyMismatch),
        (NewTransfer { pending_id: 7, ..NewTransfer::reversal(1, 100, usd()) }, E::PendingIdMustBeZero),
    ];
    let before = l.clone();
    for (transfer, expected) in cases {
        assert_eq!(apply(&mut l, 4, transfer), Err(expected), "{transfer:?}");
        assert_eq!(l, before, "a refused transfer changed the ledger: {transfer:?}");
    }
}

#[test]
fn error_codes_are_stable_snake_case_and_match_serde() {
    let mut seen = std::collections::BTreeSet::new();
    for e in TransferError::ALL {
        let code = e.code();
        assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{code}");
        assert_eq!(serde_json::to_string(e).unwrap(), format!("\"{code}\""));
        assert!(seen.insert(code), "duplicate code {code}");
        assert!(!e.to_string().is_empty());
    }
    for code in ["exceeds_credits", "accounts_must_be_different", "currency_mismatch", "pending_transfer_not_found"] {
        assert!(seen.contains(code), "{code}");
    }
    for code in ["pending_transfer_already_posted", "pending_transfer_already_voided", "pending_transfer_expired"] {
        assert!(seen.contains(code), "{code}");
    }
    assert!(seen.contains("exists_with_different_fields") && seen.contains("linked_event_failed"));
}

#[test]
fn two_phase_post_and_void() {
    let mut l = ledger();
    assert_eq!(apply(&mut l, 1, t(100, 1, 2, 100)), Ok(()));
    // Reserve 60 of the wallet's 100; another 50 does not fit while it is reserved.
    assert_eq!(apply(&mut l, 2, t(200, 2, 4, 60).with_pending(0)), Ok(()));
    assert_eq!(balances(&l, 2), [60, 0, 0, 100]);
    assert_eq!(balances(&l, 4), [0, 0, 60, 0]);
    assert_eq!(apply(&mut l, 2, t(201, 2, 4, 50)), Err(E::ExceedsCredits));
    // Post 45 of it: 15 is released.
    assert_eq!(apply(&mut l, 3, NewTransfer::post(202, 200, 45, usd())), Ok(()));
    assert_eq!(balances(&l, 2), [0, 45, 0, 100]);
    assert_eq!(balances(&l, 4), [0, 0, 0, 45]);
    assert_eq!(l.pending_status(200), Some(PendingStatus::Posted { transfer_id: 202 }));
    let post = l.transfer(202).unwrap();
    assert_eq!((post.debit_account_id, post.credit_account_id, post.amount, post.code), (2, 4, 45, 1));
    assert_eq!(apply(&mut l, 4, NewTransfer::post(203, 200, 0, usd())), Err(E::PendingTransferAlreadyPosted));
    assert_eq!(apply(&mut l, 4, NewTransfer::void(203, 200, usd())), Err(E::PendingTransferAlreadyPosted));
    // Retrying the post with the resolved fields spelled out is the same transfer.
    let explicit =
        NewTransfer { debit_account_id: 2, credit_account_id: 4, code: 1, ..NewTransfer::post(202, 200, 45, usd()) };
    assert_eq!(apply(&mut l, 4, explicit), Err(E::Exists));
    assert_eq!(apply(&mut l, 4, NewTransfer::post(202, 200, 44, usd())), Err(E::ExistsWithDifferentFields));

    // A void releases everything; then neither post nor void works.
    assert_eq!(apply(&mut l, 5, t(210, 2, 4, 55).with_pending(0)), Ok(()));
    assert_eq!(apply(&mut l, 6, NewTransfer::void(211, 210, usd())), Ok(()));
    assert_eq!(balances(&l, 2), [0, 45, 0, 100]);
    assert_eq!(l.pending_status(210), Some(PendingStatus::Voided { transfer_id: 211 }));
    assert_eq!(apply(&mut l, 7, NewTransfer::post(212, 210, 0, usd())), Err(E::PendingTransferAlreadyVoided));
    assert_eq!(apply(&mut l, 7, NewTransfer::void(212, 210, usd())), Err(E::PendingTransferAlreadyVoided));
    // Post with amount 0 posts the full amount.
    assert_eq!(apply(&mut l, 8, t(220, 2, 4, 55).with_pending(0)), Ok(()));
    assert_eq!(apply(&mut l, 9, NewTransfer::post(221, 220, 0, usd())), Ok(()));
    assert_eq!(balances(&l, 2), [0, 100, 0, 100]);
    assert_eq!(apply(&mut l, 9, NewTransfer::post(221, 220, 55, usd())), Err(E::Exists));
    check_balanced(&l);
    l.audit().unwrap();
}

#[test]
fn pending_transfers_time_out() {
    let mut l = ledger();
    // Two pendings with 1 s and 2 s timeouts at t = 10 ms.
    let r = l.apply_transfers(10, &[t(300, 1, 4, 5).with_pending(2_000), t(301, 1, 4, 7).with_pending(1_000)]);
    assert_eq!(r, vec![Ok(()), Ok(())]);
    assert_eq!(l.transfer(301).unwrap().expires_at(), Some(l.transfer(301).unwrap().timestamp + 1_000 * NS_PER_MS));
    assert!(l.expire_pending(1_000).is_empty());
    // Past 301's timeout: it cannot be posted or voided even before the sweep.
    assert_eq!(apply(&mut l, 1_011, NewTransfer::post(302, 301, 0, usd())), Err(E::PendingTransferExpired));
    assert_eq!(apply(&mut l, 1_011, NewTransfer::void(302, 301, usd())), Err(E::PendingTransferExpired));
    assert_eq!(balances(&l, 1), [12, 0, 0, 0]);
    // The sweep releases it and records when.
    assert_eq!(l.expire_pending(1_500), vec![301]);
    assert_eq!(balances(&l, 1), [5, 0, 0, 0]);
    let Some(PendingStatus::Expired { timestamp }) = l.pending_status(301) else { panic!() };
    assert_eq!(timestamp, l.last_timestamp());
    assert_eq!(apply(&mut l, 1_600, NewTransfer::post(302, 301, 0, usd())), Err(E::PendingTransferExpired));
    // 300 can still be posted before its timeout.
    assert_eq!(apply(&mut l, 1_700, NewTransfer::post(303, 300, 0, usd())), Ok(()));
    assert!(l.expire_pending(100_000).is_empty());
    check_balanced(&l);
    l.audit().unwrap();
}

#[test]
fn expiry_is_ordered_and_bounded() {
    let mut l = ledger();
    let batch: Vec<_> = (0..5u128).map(|i| t(400 + i, 1, 4, 1).with_pending(1_000 - 100 * i as u64)).collect();
    assert!(l.apply_transfers(0, &batch).iter().all(Result::is_ok));
    assert_eq!(l.expire_pending_at_most(10_000, 2), vec![404, 403]);
    assert_eq!(l.expire_pending(10_000), vec![402, 401, 400]);
    assert_eq!(balances(&l, 1), [0, 0, 0, 0]);
}

#[test]
fn a_failed_linked_chain_leaves_no_trace() {
    let mut l = ledger();
    assert_eq!(apply(&mut l, 1, t(100, 1, 2, 100)), Ok(()));
    let before = l.clone();
    // pending → post of it → an overdraft: all three fail, the overdraft with its own error.
    let chain = [
        t(500, 2, 4, 30).with_pending(0).with_linked(),
        NewTransfer::post(501, 500, 0, usd()).with_linked(),
        t(502, 2, 4, 71),
    ];
    let r = l.apply_transfers(2, &chain);
    assert_eq!(r, vec![Err(E::LinkedEventFailed), Err(E::LinkedEventFailed), Err(E::ExceedsCredits)]);
    assert_eq!(l, before);
    // The same chain fitting the balance applies entirely; a later independent event too.
    let chain = [chain[0], chain[1], t(502, 2, 4, 70), t(503, 1, 4, 1)];
    assert_eq!(l.apply_transfers(3, &chain), vec![Ok(()), Ok(()), Ok(()), Ok(())]);
    assert_eq!(balances(&l, 2), [0, 100, 0, 100]);
    // A failure in the middle: the events before and after fail too.
    let before = l.clone();
    let r = l.apply_transfers(4, &[t(510, 1, 4, 1).with_linked(), t(511, 1, 99, 1).with_linked(), t(512, 1, 4, 1)]);
    assert_eq!(r, vec![Err(E::LinkedEventFailed), Err(E::CreditAccountNotFound), Err(E::LinkedEventFailed)]);
    assert_eq!(l, before);
}

#[test]
fn an_open_chain_fails() {
    let mut l = ledger();
    let before = l.clone();
    let r = l.apply_transfers(1, &[t(600, 1, 4, 1), t(601, 1, 4, 1).with_linked(), t(602, 1, 4, 1).with_linked()]);
    assert_eq!(r, vec![Ok(()), Err(E::LinkedEventFailed), Err(E::LinkedEventChainOpen)]);
    assert!(l.transfer(601).is_none() && l.transfer(602).is_none());
    let r = l.apply_transfers(1, &[t(603, 1, 4, 1).with_linked()]);
    assert_eq!(r, vec![Err(E::LinkedEventChainOpen)]);
    assert_ne!(l, before);
    assert!(l.apply_transfers(1, &[]).is_empty());
}

#[test]
fn retries_within_and_across_batches() {
    let mut l = ledger();
    let r = l.apply_transfers(1, &[t(700, 1, 4, 3), t(700, 1, 4, 3), t(700, 1, 4, 4)]);
    assert_eq!(r, vec![Ok(()), Err(E::Exists), Err(E::ExistsWithDifferentFields)]);
    // A retry is recognised even when it would now fail validation.
    assert_eq!(apply(&mut l, 2, t(701, 2, 1, 1)), Err(E::ExceedsCredits));
    assert_eq!(apply(&mut l, 2, t(702, 1, 2, 5)), Ok(()));
    assert_eq!(apply(&mut l, 2, t(703, 2, 1, 5)), Ok(()));
    assert_eq!(apply(&mut l, 3, t(703, 2, 1, 5)), Err(E::Exists));
    // Flags are compared too.
    assert_eq!(apply(&mut l, 3, t(700, 1, 4, 3).with_pending(0)), Err(E::ExistsWithDifferentFields));
}

#[test]
fn reversals() {
    let mut l = ledger();
    assert_eq!(l.apply_transfers(1, &[t(800, 1, 2, 100), t(801, 2, 4, 30)]), vec![Ok(()), Ok(())]);
    assert_eq!(l.reverse(2, 801, 802), Ok(()));
    assert_eq!(balances(&l, 2), [0, 30, 0, 130]);
    assert_eq!(balances(&l, 4), [0, 30, 0, 30]);
    let rev = l.transfer(802).unwrap();
    assert_eq!((rev.debit_account_id, rev.credit_account_id, rev.amount, rev.reversal_of), (4, 2, 30, 801));
    assert_eq!(l.reversed_by(801), Some(802));
    // At most once; a retry of the same reversal is `exists`.
    assert_eq!(l.reverse(3, 801, 803), Err(E::TransferAlreadyReversed));
    assert_eq!(l.reverse(3, 801, 802), Err(E::Exists));
    assert_eq!(l.reverse(3, 802, 804), Err(E::TransferNotReversible));
    assert_eq!(l.reverse(3, 999, 804), Err(E::ReversedTransferNotFound));
    // Limits apply: the wallet spent its money, so reversing its funding fails.
    assert_eq!(apply(&mut l, 4, t(805, 2, 4, 100)), Ok(()));
    assert_eq!(l.reverse(5, 800, 806), Err(E::ExceedsCredits));
    // Posts can be reversed; pendings and voids cannot.
    assert_eq!(apply(&mut l, 6, t(810, 1, 4, 9).with_pending(0)), Ok(()));
    assert_eq!(l.reverse(6, 810, 811), Err(E::TransferNotReversible));
    assert_eq!(apply(&mut l, 6, NewTransfer::post(812, 810, 4, usd())), Ok(()));
    assert_eq!(l.reverse(7, 812, 813), Ok(()));
    assert_eq!(balances(&l, 1), [0, 104, 0, 4]);
    // A reversal in a failed chain does not count.
    let r = l
        .apply_transfers(8, &[t(820, 1, 4, 1), NewTransfer::reversal(821, 820, usd()).with_linked(), t(822, 1, 99, 1)]);
    assert_eq!(r, vec![Ok(()), Err(E::LinkedEventFailed), Err(E::CreditAccountNotFound)]);
    assert_eq!(l.reversed_by(820), None);
    assert_eq!(l.reverse(9, 820, 821), Ok(()));
    check_balanced(&l);
    l.audit().unwrap();
}

#[test]
fn balance_history() {
    let mut l = ledger();
    let created = l.account(2).unwrap().created_at;
    assert_eq!(apply(&mut l, 10, t(900, 1, 2, 50)), Ok(()));
    assert_eq!(apply(&mut l, 20, t(901, 2, 4, 20).with_pending(5)), Ok(()));
    assert_eq!(l.expire_pending(30), vec![901]);
    let at = |ms: u64| l.balance_at(2, ms * NS_PER_MS).unwrap();
    assert_eq!(l.balance_at(2, created), Ok(Balances::default()));
    assert_eq!(at(10).credits_posted, 50);
    assert_eq!(at(19), at(10));
    assert_eq!(at(20).debits_pending, 20);
    assert_eq!(at(29).debits_pending, 20);
    assert_eq!(at(30).debits_pending, 0);
    assert_eq!(l.history(2).unwrap().len(), 4);
    for e in l.history(2).unwrap() {
        assert_eq!(recompute(&l, 2, e.timestamp), e.balances);
    }
    assert_eq!(l.balance_at(2, created - 1), Err(HistoryError::BeforeAccountCreated));
    assert_eq!(l.balance_at(4, created), Err(HistoryError::HistoryNotEnabled));
    assert_eq!(l.balance_at(99, created), Err(HistoryError::AccountNotFound));
    assert_eq!(HistoryError::HistoryNotEnabled.code(), "history_not_enabled");
}

#[test]
fn statements_page_by_timestamp() {
    let mut l = ledger();
    let batch: Vec<_> =
        (0..10u128).map(|i| if i % 2 == 0 { t(1000 + i, 1, 4, 1) } else { t(1000 + i, 4, 6, 1) }).collect();
    let r = l.apply_transfers(1, &batch);
    // Odd ones are USD → EUR.
    assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 5);
    let first = l.transfers_of(4, 3, None);
    assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1000, 1002, 1004]);
    let next = l.transfers_of(4, 3, Some(first[2].timestamp));
    assert_eq!(next.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1006, 1008]);
    assert!(l.transfers_of(4, 3, Some(u64::MAX)).is_empty());
    assert!(l.transfers_of(2, 10, None).is_empty());
    assert_eq!(l.transfers_of(1, usize::MAX, None).len(), 5);
}

#[test]
fn ten_thousand_transfers_in_one_batch() {
    let mut l = ledger();
    let n = 10_000u128;
    // Fund the wallet, then alternate: wallet → 4 and pending 1 → 4 posted by the next event.
    let mut batch = vec![t(1, 1, 2, n)];
    for i in 0..n {
        let id = 10 + 3 * i;
        batch.push(t(id, 2, 4, 1));
        batch.push(t(id + 1, 1, 4, 2).with_pending(60_000).with_linked());
        batch.push(NewTransfer::post(id + 2, id + 1, 1, usd()));
    }
    let start = Instant::now();
    let results = l.apply_transfers(1, &batch);
    let elapsed = start.elapsed();
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(results.len(), 30_001);
    assert_eq!(balances(&l, 2), [0, n, 0, n]);
    assert_eq!(balances(&l, 4), [0, 0, 0, 2 * n]);
    assert_eq!(balances(&l, 1), [0, 2 * n, 0, 0]);
    assert_eq!(l.transfers().count(), 30_001);
    check_balanced(&l);
    l.audit().unwrap();
    // Generous: O(n log n) takes well under a second even unoptimized; O(n²) would not.
    assert!(elapsed.as_secs() < 10, "{elapsed:?}");
    eprintln!("30 001 transfers in one batch: {elapsed:?}");
}

#[test]
fn snapshots_round_trip_and_are_audited() {
    let mut l = ledger();
    let batch = [
        t(1, 1, 2, 100),
        t(2, 2, 4, 10).with_pending(1_000),
        t(3, 2, 4, 10).with_pending(0),
        NewTransfer::post(4, 3, 5, usd()),
        t(5, 1, 2, 1),
    ];
    assert!(l.apply_transfers(1, &batch).iter().all(Result::is_ok));
    assert_eq!(l.reverse(2, 5, 6), Ok(()));
    let json = serde_json::to_string(&l).unwrap();
    let back: Ledger = serde_json::from_str(&json).unwrap();
    assert_eq!(back, l);
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    // The expiry index is rebuilt: pending 2 still expires.
    let mut back = back;
    assert_eq!(back.expire_pending(10_000), vec![2]);
    // A tampered balance is refused.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["accounts"][1]["credits_posted"] = serde_json::json!(1_000_000);
    let err = serde_json::from_value::<Ledger>(value).unwrap_err().to_string();
    assert!(err.contains("inconsistent ledger state"), "{err}");
    // So is a transfer whose account does not exist.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["transfers"][0]["debit_account_id"] = serde_json::json!(77);
    assert!(serde_json::from_value::<Ledger>(value).is_err());
}

#[test]
fn snapshots_listing_transfers_by_id_still_load() {
    // Ids against timestamp order, and a failed chain in between (its pushes are undone).
    let mut l = ledger();
    assert!(l.apply_transfers(1, &[t(30, 1, 4, 5), t(10, 4, 1, 2)]).iter().all(Result::is_ok));
    let failed = l.apply_transfers(2, &[t(40, 1, 4, 1).with_linked(), t(41, 5, 4, 9)]);
    assert_eq!(failed, vec![Err(E::LinkedEventFailed), Err(E::ExceedsCredits)]);
    assert!(l.apply_transfers(3, &[t(20, 1, 4, 1)]).iter().all(Result::is_ok));
    let ids = |ts: Vec<&Transfer>| ts.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(l.transfers_of(4, 10, None)), vec![30, 10, 20]);
    assert_eq!(ids(l.transfers().collect()), vec![30, 10, 20]);
    // Snapshots written before transfers were kept in timestamp order listed them by id.
    let mut value: serde_json::Value = serde_json::to_value(&l).unwrap();
    value["transfers"].as_array_mut().unwrap().sort_by_key(|t| t["id"].as_u64());
    assert_eq!(value["transfers"][0]["id"], 10);
    let back: Ledger = serde_json::from_value(value).unwrap();
    assert_eq!(back, l);
    assert_eq!(ids(back.transfers_of(1, 10, None)), vec![30, 10, 20]);
}

#[test]
fn wire_shapes() {
    let t: NewTransfer = serde_json::from_str(
        r#"{"id": 5, "debit_account_id": 1, "credit_account_id": 2, "amount": 3, "currency": "USD", "code": 1,
            "flags": {"pending": true}, "timeout_ms": 100}"#,
    )
    .unwrap();
    assert!(t.flags.pending && !t.flags.linked);
    assert!(serde_json::from_str::<NewTransfer>(r#"{"id": 5, "currency": "usd"}"#).is_err());
    assert!(serde_json::from_str::<NewTransfer>(r#"{"id": 5, "currency": "USD", "bogus": 1}"#).is_err());
    let a: NewAccount =
        serde_json::from_str(r#"{"id": 340282366920938463463374607431768211454, "currency": "EUR"}"#).unwrap();
    assert_eq!(a.id, u128::MAX - 1);
}
