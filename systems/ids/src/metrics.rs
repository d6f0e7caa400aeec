//! `basalt_ids_*` metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Default)]
pub struct IdsMetrics {
    pub issued: Family<KindLabel, Counter>,
    pub refusals: Family<ReasonLabel, Counter>,
    pub waits: Counter,
    pub renewals: Counter,
}

impl IdsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("issued", "IDs issued, by kind", m.issued.clone());
        registry.register(
            "refusals",
            "Requests refused to avoid a duplicate (clock_behind, out_of_range)",
            m.refusals.clone(),
        );
        registry.register(
            "waits",
            "Times a request waited for the clock (sequence exhausted or small backward step)",
            m.waits.clone(),
        );
        registry.register("reservation_renewals", "Durable high-water-mark reservations written", m.renewals.clone());
        m
    }

    pub fn issued(&self, kind: &'static str, n: u64) {
        self.issued.get_or_create(&KindLabel { kind }).inc_by(n);
    }

    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&ReasonLabel { reason }).inc();
    }
}
