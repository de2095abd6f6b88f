//! Inputs shared by the benches: the demo shop's exports, decoded as the receivers decode them.

use prost::Message;
use sightline_demo::{Dice, export_requests};
use sightline_ingest::{BodyEncoding, Intake, Limits, ingest_traces};
use sightline_model::schema::SpanRow;

/// The moment the benches' exports are stamped and received at.
pub const NOW_NS: i64 = 1_800_000_000_000_000_000;

/// The spans of one traces export of 50 demo requests (about 300 spans), normalized.
pub fn demo_spans(dice: &mut Dice) -> Vec<SpanRow> {
    let (traces, _) = export_requests(dice, 50, NOW_NS);
    ingest_traces(
        &traces.encode_to_vec(),
        BodyEncoding::Protobuf,
        NOW_NS,
        &Intake::unredacted(Limits::default()),
    )
    .expect("demo traces decode")
    .spans
}
