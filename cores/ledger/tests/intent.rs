//! The payment-intent state machine: Stripe's flows case by case, errors, unknown outcomes,
//! refunds; and random operation sequences that must never charge twice or over-refund.

use basalt_ledger_core::*;
use proptest::prelude::*;

fn create(amount: u64, capture_method: CaptureMethod, pm: Option<&str>) -> PaymentIntent {
    let params = CreateParams { amount, currency: "usd".into(), capture_method, payment_method: pm.map(str::to_owned) };
    let t = PaymentIntent::create(params).unwrap();
    assert_eq!(t.effects, vec![Effect::Webhook { event: EventType::Created }]);
    t.intent
}

fn ok(t: Result<Transition, IntentError>) -> (PaymentIntent, Vec<Effect>) {
    let t = t.unwrap();
    (t.intent, t.effects)
}

fn code(r: Result<Transition, IntentError>) -> &'static str {
    r.unwrap_err().code.as_str()
}

fn usd() -> Currency {
    Currency::new("USD").unwrap()
}

fn hook(event: EventType) -> Effect {
    Effect::Webhook { event }
}

#[test]
fn automatic_capture() {
    let pi = create(1_000, CaptureMethod::Automatic, None);
    assert_eq!(pi.status, IntentStatus::RequiresPaymentMethod);
    assert_eq!(code(pi.confirm(None)), "parameter_missing");
    let (pi, effects) = ok(pi.confirm(Some("pm_card".into())));
    assert_eq!(pi.status, IntentStatus::Processing);
    let a = AttemptId(0);
    assert_eq!(
        effects,
        vec![
            Effect::Authorize {
                attempt: a,
                amount: 1_000,
                currency: usd(),
                payment_method: "pm_card".into(),
                capture: true
            },
            hook(EventType::Processing),
        ]
    );
    let (pi, effects) = ok(pi.resolve(a, Outcome::Succeeded));
    assert_eq!((pi.status, pi.amount_received), (IntentStatus::Succeeded, 1_000));
    assert_eq!(
        effects,
        vec![
            Effect::PostLedger { posting: Posting::Charge { attempt: a, amount: 1_000 }, currency: usd() },
            hook(EventType::Succeeded),
        ]
    );
    // A repeated provider answer changes nothing; a contradicting one is refused.
    let (again, effects) = ok(pi.resolve(a, Outcome::Succeeded));
    assert_eq!((again, effects), (pi.clone(), vec![]));
    assert_eq!(code(pi.resolve(a, Outcome::Declined("x".into()))), "outcome_conflict");
    assert_eq!(code(pi.resolve(AttemptId(5), Outcome::Succeeded)), "resource_missing");
    assert_eq!(code(pi.confirm(None)), "payment_intent_unexpected_state");
    assert_eq!(code(pi.cancel(None)), "payment_intent_unexpected_state");
}

#[test]
fn manual_capture_of_part_of_the_hold() {
    let pi = create(5_000, CaptureMethod::Manual, Some("pm"));
    assert_eq!(pi.status, IntentStatus::RequiresConfirmation);
    let (pi, effects) = ok(pi.confirm(None));
    assert!(matches!(effects[0], Effect::Authorize { capture: false, amount: 5_000, .. }));
    let (pi, effects) = ok(pi.resolve(AttemptId(0), Outcome::Succeeded));
    assert_eq!((pi.status, pi.amount_capturable), (IntentStatus::RequiresCapture, 5_000));
    let hold = Posting::Hold { authorization: AttemptId(0), amount: 5_000 };
    assert_eq!(
        effects,
        vec![Effect::PostLedger { posting: hold, currency: usd() }, hook(EventType::AmountCapturableUpdated)]
    );
    assert_eq!(code(pi.capture(Some(5_001))), "amount_too_large");
    assert_eq!(code(pi.capture(Some(0))), "amount_too_small");
    let (pi, effects) = ok(pi.capture(Some(3_000)));
    assert_eq!(effects, vec![Effect::Capture { attempt: AttemptId(1), authorization: AttemptId(0), amount: 3_000 }]);
    assert_eq!(code(pi.capture(None)), "payment_intent_unexpected_state");
    // The capture is declined: back to requires_capture; then it succeeds.
    let (pi, _) = ok(pi.resolve(AttemptId(1), Outcome::Declined("processing_error".into())));
    assert_eq!(pi.status, IntentStatus::RequiresCapture);
    let (pi, _) = ok(pi.capture(Some(3_000)));
    let (pi, effects) = ok(pi.resolve(AttemptId(2), Outcome::Succeeded));
    assert_eq!((pi.status, pi.amount_received, pi.amount_capturable), (IntentStatus::Succeeded, 3_000, 0));
    let capture = Posting::CaptureHold { authorization: AttemptId(0), amount: 3_000 };
    assert_eq!(effects[0], Effect::PostLedger { posting: capture, currency: usd() });
}

#[test]
fn decline_then_retry_with_another_card() {
    let pi = create(700, CaptureMethod::Automatic, Some("pm_bad"));
    let (pi, _) = ok(pi.confirm(None));
    let (pi, effects) = ok(pi.resolve(AttemptId(0), Outcome::Declined("insufficient_funds".into())));
    assert_eq!(pi.status, IntentStatus::RequiresPaymentMethod);
    assert_eq!(pi.payment_method, None);
    let err = pi.last_payment_error.clone().unwrap();
    assert_eq!(
        (err.kind, err.code.as_str(), err.decline_code.as_str()),
        (ErrorType::CardError, "card_declined", "insufficient_funds")
    );
    assert_eq!(effects, vec![hook(EventType::PaymentFailed)]);
    let (pi, _) = ok(pi.update(Some(800), Some("pm_good".into())));
    assert_eq!((pi.status, pi.amount), (IntentStatus::RequiresConfirmation, 800));
    let (pi, effects) = ok(pi.confirm(None));
    assert!(matches!(&effects[0], Effect::Authorize { attempt: AttemptId(1), amount: 800, .. }));
    assert_eq!(pi.last_payment_error, None);
    let (pi, _) = ok(pi.resolve(AttemptId(1), Outcome::Succeeded));
    assert_eq!(pi.amount_received, 800);
    assert_eq!(code(pi.update(Some(5), None)), "payment_intent_unexpected_state");
}

#[test]
fn an_unknown_outcome_is_resolved_by_query_never_by_a_new_charge() {
    let pi = create(1_000, CaptureMethod::Automatic, Some("pm"));
    let (pi, _) = ok(pi.confirm(None));
    let (pi, effects) = ok(pi.resolve(AttemptId(0), Outcome::Unknown));
    assert_eq!(pi.status, IntentStatus::Processing);
    assert_eq!(pi.open_attempt().unwrap().status, AttemptStatus::Unknown);
    assert_eq!(effects, vec![Effect::QueryAttempt { attempt: AttemptId(0) }]);
    // No new attempt, no cancel while the outcome is unknown.
    assert_eq!(code(pi.confirm(Some("pm2".into()))), "payment_intent_unexpected_state");
    assert_eq!(code(pi.cancel(None)), "payment_intent_unexpected_state");
    // The query times out again, then answers.
    let (pi, effects) = ok(pi.resolve(AttemptId(0), Outcome::Unknown));
    assert_eq!(effects, vec![Effect::QueryAttempt { attempt: AttemptId(0) }]);
    let (pi, _) = ok(pi.resolve(AttemptId(0), Outcome::Succeeded));
    assert_eq!((pi.status, pi.attempts.len()), (IntentStatus::Succeeded, 1));
    // A late "unknown" for a resolved attempt is a no-op.
    assert_eq!(ok(pi.resolve(AttemptId(0), Outcome::Unknown)).1, vec![]);
}

#[test]
fn requires_action_then_cancel_then_late_success_is_voided() {
    let pi = create(1_000, CaptureMethod::Automatic, Some("pm_3ds"));
    let (pi, _) = ok(pi.confirm(None));
    let (pi, effects) = ok(pi.resolve(AttemptId(0), Outcome::RequiresAction));
    assert_eq!(pi.status, IntentStatus::RequiresAction);
    assert_eq!(effects, vec![hook(EventType::RequiresAction)]);
    assert_eq!(code(pi.confirm(None)), "payment_intent_unexpected_state");
    let (pi, effects) = ok(pi.cancel(Some(CancellationReason::Abandoned)));
    assert_eq!(pi.status, IntentStatus::Canceled);
    assert_eq!(effects, vec![Effect::Void { attempt: AttemptId(0) }, hook(EventType::Canceled)]);
    assert_eq!(pi.attempts[0].status, AttemptStatus::Abandoned);
    // The customer completed 3DS after all: the money goes back, the intent stays canceled.
    let (pi, effects) = ok(pi.resolve(AttemptId(0), Outcome::Succeeded));
    assert_eq!(effects, vec![Effect::Void { attempt: AttemptId(0) }]);
    assert_eq!((pi.status, pi.amount_received), (IntentStatus::Canceled, 0));
}

#[test]
fn requires_action_then_success() {
    let pi = create(1_000, CaptureMethod::Manual, Some("pm_3ds"));
    let (pi, _) = ok(pi.confirm(None));
    let (pi, _) = ok(pi.resolve(AttemptId(0), Outcome::RequiresAction));
    let (pi, _) = ok(pi.resolve(AttemptId(0), Outcome::Succeeded));
    assert_eq!(pi.status, IntentStatus::RequiresCapture);
    // Cancel from requires_capture voids the hold.
    let (pi, effects) = ok(pi.cancel(None));
    assert_eq!(
        effects,
        vec![
            Effect::Void { attempt: AttemptId(0) },
            Effect::PostLedger { posting: Posting::VoidHold { authorization: AttemptId(0) }, currency: usd() },
            hook(EventType::Canceled),
        ]
    );
    assert_eq!((pi.status, pi.amount_capturable), (IntentStatus::Canceled, 0));
}

#[test]
fn cancel_only_from_the_states_stripe_allows() {
    let pi = create(100, CaptureMethod::Automatic, None);
    assert_eq!(ok(pi.cancel(None)).0.status, IntentStatus::Canceled);
    let (pi, _) = ok(pi.update(None, Some("pm".into())));
    let (canceled, _) = ok(pi.cancel(Some(CancellationReason::Duplicate)));
    assert_eq!(canceled.cancellation_reason, Some(CancellationReason::Duplicate));
    assert_eq!(code(canceled.cancel(None)), "payment_intent_unexpected_state");
    assert_eq!(code(canceled.confirm(None)), "payment_intent_unexpected_state");
    let (processing, _) = ok(pi.confirm(None));
    assert_eq!(code(processing.cancel(None)), "payment_intent_unexpected_state");
}

#[test]
fn refunds() {
    let pi = create(1_000, CaptureMethod::Automatic, Some("pm"));
    assert_eq!(code(pi.refund(None)), "payment_intent_unexpected_state");
    let (pi, _) = ok(pi.confirm(None));
    let (pi, _) = ok(pi.resolve(AttemptId(0), Outcome::Succeeded));
    let (pi, effects) = ok(pi.refund(Some(300)));
    assert_eq!(effects, vec![Effect::Refund { refund: RefundId(0), amount: 300 }, hook(EventType::RefundCreated)]);
    // Pending refunds reserve their amount.
    assert_eq!(code(pi.refund(Some(701))), "amount_too_large");
    assert_eq!(code(pi.refund(Some(0))), "amount_too_small");
    let (pi, effects) = ok(pi.refund(None));
    assert_eq!(effects[0], Effect::Refund { refund: RefundId(1), amount: 700 });
    assert_eq!(code(pi.refund(None)), "charge_already_refunded");
    // The first succeeds (after an unknown), the second fails: 700 is refundable again.
    let (pi, effects) = ok(pi.resolve_refund(RefundId(0), RefundOutcome::Unknown));
    assert_eq!(effects, vec![Effect::QueryRefund { refund: RefundId(0) }]);
    let (pi, effects) = ok(pi.resolve_refund(RefundId(0), RefundOutcome::Succeeded));
    let posting = Posting::Refund { refund: RefundId(0), amount: 300 };
    assert_eq!(effects, vec![Effect::PostLedger { posting, currency: usd() }, hook(EventType::ChargeRefunded)]);
    assert_eq!(pi.amount_refunded, 300);
    assert_eq!(ok(pi.resolve_refund(RefundId(0), RefundOutcome::Succeeded)).1, vec![]);
    assert_eq!(code(pi.resolve_refund(RefundId(0), RefundOutcome::Canceled)), "outcome_conflict");
    let (pi, effects) = ok(pi.resolve_refund(RefundId(1), RefundOutcome::Failed("expired_card".into())));
    assert_eq!(effects, vec![hook(EventType::RefundFailed)]);
    assert_eq!(pi.refunds[1].failure_reason.as_deref(), Some("expired_card"));
    assert_eq!(pi.amount_refund_reserved(), 300);
    // Cancel a pending refund: asked once, decided by the provider.
    let (pi, _) = ok(pi.refund(Some(200)));
    let (pi, effects) = ok(pi.cancel_refund(RefundId(2)));
    assert_eq!(effects, vec![Effect::CancelRefund { refund: RefundId(2) }]);
    assert_eq!(ok(pi.cancel_refund(RefundId(2))).1, vec![]);
    let (pi, _) = ok(pi.resolve_refund(RefundId(2), RefundOutcome::Canceled));
    assert_eq!(pi.refunds[2].status, RefundStatus::Canceled);
    assert_eq!(code(pi.cancel_refund(RefundId(2))), "refund_unexpected_state");
    assert_eq!(code(pi.cancel_refund(RefundId(9))), "resource_missing");
    assert_eq!(pi.amount_refunded, 300);
}

#[test]
fn creation_is_validated() {
    let params = |amount: u64, currency: &str| CreateParams {
        amount,
        currency: currency.into(),
        capture_method: CaptureMethod::Automatic,
        payment_method: None,
    };
    let err = |p: CreateParams| PaymentIntent::create(p).unwrap_err();
    assert_eq!(err(params(0, "usd")).code, ErrorCode::AmountTooSmall);
    assert_eq!(err(params(AMOUNT_MAX + 1, "usd")).code, ErrorCode::AmountTooLarge);
    assert!(PaymentIntent::create(params(AMOUNT_MAX, "usd")).is_ok());
    let e = err(params(100, "xyz"));
    assert_eq!((e.code, e.param), (ErrorCode::InvalidCurrency, Some("currency")));
    assert_eq!(err(params(100, "us")).code, ErrorCode::InvalidCurrency);
    let jpy = PaymentIntent::create(params(500, "JPY")).unwrap().intent;
    assert_eq!((jpy.currency.as_str(), jpy.currency.exponent()), ("JPY", Some(0)));
    let e =
        PaymentIntent::create(CreateParams { payment_method: Some(String::new()), ..params(5, "eur") }).unwrap_err();
    assert_eq!(e.code.as_str(), "parameter_invalid_string_empty");
    // Stripe's error shape.
    let json = serde_json::to_value(err(params(0, "usd"))).unwrap();
    assert_eq!(json["type"], "invalid_request_error");
    assert_eq!(json["code"], "amount_too_small");
    assert_eq!(json["param"], "amount");
    assert!(json["message"].as_str().unwrap().contains("at least 1"));
    assert_eq!(
        serde_json::to_value(EventType::AmountCapturableUpdated).unwrap(),
        "payment_intent.amount_capturable_updated"
    );
    assert_eq!(
        serde_json::to_value(IntentStatus::RequiresPaymentMethod).unwrap(),
        IntentStatus::RequiresPaymentMethod.as_str()
    );
}

#[test]
fn attempts_are_bounded() {
    let mut pi = create(100, CaptureMethod::Automatic, Some("pm"));
    for i in 0..ATTEMPTS_MAX as u32 {
        pi = ok(pi.confirm(Some("pm".into()))).0;
        pi = ok(pi.resolve(AttemptId(i), Outcome::Declined("do_not_honor".into()))).0;
    }
    assert_eq!(code(pi.confirm(Some("pm".into()))), "too_many_attempts");
}

// ---------------------------------------------------------------------------------------------
// Random operation sequences.

#[derive(Debug, Clone)]
enum Op {
    Update(Option<u64>, bool),
    Confirm(bool),
    Capture(Option<u64>),
    Cancel,
    Resolve(usize, u8),
    Refund(Option<u64>),
    ResolveRefund(usize, u8),
    CancelRefund(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let amount = prop_oneof![Just(None), (0u64..1_200).prop_map(Some)];
    prop_oneof![
        1 => (amount.clone(), any::<bool>()).prop_map(|(a, pm)| Op::Update(a, pm)),
        4 => any::<bool>().prop_map(Op::Confirm),
        4 => amount.clone().prop_map(Op::Capture),
        1 => Just(Op::Cancel),
        12 => (any::<usize>(), 0u8..6).prop_map(|(i, o)| Op::Resolve(i, o)),
        3 => amount.prop_map(Op::Refund),
        5 => (any::<usize>(), 0u8..5).prop_map(|(i, o)| Op::ResolveRefund(i, o)),
        1 => any::<usize>().prop_map(Op::CancelRefund),
    ]
}

fn outcome(o: u8) -> Outcome {
    match o {
        0 | 1 => Outcome::Succeeded,
        2 => Outcome::Declined("card_declined".into()),
        3 => Outcome::Declined("insufficient_funds".into()),
        4 => Outcome::RequiresAction,
        _ => Outcome::Unknown,
    }
}

fn refund_outcome(o: u8) -> RefundOutcome {
    match o {
        0 | 1 => RefundOutcome::Succeeded,
        2 => RefundOutcome::Failed("expired_card".into()),
        3 => RefundOutcome::Canceled,
        _ => RefundOutcome::Unknown,
    }
}

/// Picks an existing index of `len`, or (one time in eight, or when there is none) `len`.
fn index(i: usize, len: usize) -> u32 {
    (if i.is_multiple_of(8) || len == 0 { len } else { (i / 8) % len }) as u32
}

/// Applies `op`; attempt and refund indexes mostly pick existing ones.
fn apply(pi: &PaymentIntent, op: &Op) -> Result<Transition, IntentError> {
    let attempt = |i: usize| AttemptId(index(i, pi.attempts.len()));
    let refund = |i: usize| RefundId(index(i, pi.refunds.len()));
    match op {
        Op::Update(a, pm) => pi.update(*a, pm.then(|| "pm_new".to_owned())),
        Op::Confirm(pm) => pi.confirm(pm.then(|| "pm_card".to_owned())),
        Op::Capture(a) => pi.capture(*a),
        Op::Cancel => pi.cancel(None),
        Op::Resolve(i, o) => pi.resolve(attempt(*i), outcome(*o)),
        Op::Refund(a) => pi.refund(*a),
        Op::ResolveRefund(i, o) => pi.resolve_refund(refund(*i), refund_outcome(*o)),
        Op::CancelRefund(i) => pi.cancel_refund(refund(*i)),
    }
}

/// Money as the effects tell it, summed over the run.
#[derive(Debug, Default)]
struct Ledgered {
    charged: u64,
    held: u64,
    captured: u64,
    refunded: u64,
}

fn check(before: &PaymentIntent, t: &Transition, money: &mut Ledgered) -> Result<(), TestCaseError> {
    let pi = &t.intent;
    // No new provider money call while an attempt is open.
    let starts = t.effects.iter().filter(|e| matches!(e, Effect::Authorize { .. } | Effect::Capture { .. })).count();
    prop_assert!(starts <= 1);
    if before.open_attempt().is_some() {
        prop_assert_eq!(starts, 0, "a new attempt while one was open");
    }
    prop_assert!(pi.attempts.iter().filter(|a| a.status.is_open()).count() <= 1);
    let succeeded =
        |k: AttemptKind| pi.attempts.iter().filter(|a| a.kind == k && a.status == AttemptStatus::Succeeded).count();
    prop_assert!(
        succeeded(AttemptKind::Charge) + succeeded(AttemptKind::Capture) <= 1,
        "charged twice: {:?}",
        pi.attempts
    );
    prop_assert!(succeeded(AttemptKind::Authorize) <= 1, "authorized twice");
    // Status and the open attempt agree.
    let open = pi.open_attempt().map(|a| a.status.clone());
    match pi.status {
        IntentStatus::Processing => prop_assert!(matches!(open, Some(AttemptStatus::Pending | AttemptStatus::Unknown))),
        IntentStatus::RequiresAction => prop_assert_eq!(open, Some(AttemptStatus::RequiresAction)),
        _ => prop_assert_eq!(open, None),
    }
    // Amounts.
    prop_assert!(pi.amount_refunded <= pi.amount_received && pi.amount_received <= pi.amount);
    prop_assert!(pi.amount_refund_reserved() <= pi.amount_received);
    prop_assert!(pi.amount_capturable <= pi.amount);
    if pi.status != IntentStatus::RequiresCapture && pi.status != IntentStatus::Processing {
        prop_assert_eq!(pi.amount_capturable, 0);
    }
    for e in &t.effects {
        if let Effect::PostLedger { posting, .. } = e {
            match *posting {
                Posting::Charge { amount, .. } => money.charged += amount,
                Posting::Hold { amount, .. } => money.held += amount,
                Posting::CaptureHold { amount, .. } => {
                    prop_assert!(amount <= money.held);
                    money.captured += amount;
                }
                Posting::VoidHold { .. } => prop_assert!(money.held > 0 && money.captured == 0),
                Posting::Refund { amount, .. } => money.refunded += amount,
            }
        }
    }
    prop_assert_eq!(money.charged + money.captured, pi.amount_received);
    prop_assert_eq!(money.refunded, pi.amount_refunded);
    prop_assert!(money.held <= pi.amount);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn never_charged_twice_never_over_refunded(
        manual in any::<bool>(),
        amount in 1u64..1_000,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let method = if manual { CaptureMethod::Manual } else { CaptureMethod::Automatic };
        let mut pi = create(amount, method, None);
        let mut money = Ledgered::default();
        for op in &ops {
            if let Ok(t) = apply(&pi, op) {
                check(&pi, &t, &mut money)?;
                let back: PaymentIntent = serde_json::from_str(&serde_json::to_string(&t.intent).unwrap()).unwrap();
                prop_assert_eq!(&back, &t.intent);
                pi = t.intent;
            }
        }
    }
}
