//! Whether stream `AXON` is still the stream the projector's offset belongs to. A stream
//! that was recreated, or lost its tail (JetStream's fsync window), would otherwise have
//! its new messages skipped silently: the projector stops instead and says what to do.

/// What the projector knows of stream `AXON` now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// When the stream was created (RFC 3339).
    pub created: String,
    /// Its first stored sequence.
    pub first_seq: u64,
    /// Its last stored sequence.
    pub last_seq: u64,
    /// How many messages it holds.
    pub messages: u64,
}

/// Why projecting must stop, with what the operator must do; `None` when all is well.
pub fn mismatch(recorded: Option<&str>, stream: &Stream, applied: u64) -> Option<String> {
    const LOG_SAFE: &str = "Postgres still holds every event logged so far.";
    if let Some(recorded) = recorded
        && recorded != stream.created
    {
        return Some(format!(
            "stream AXON was created at {}, but the projector's offset (seq {applied}) belongs to the stream created at {recorded}: it was deleted and created again. {LOG_SAFE} Restore the old stream, or, to project the new one from its start, run `UPDATE projector_offsets SET applied_seq = 0, fanned_seq = 0, stream_created = NULL;` in the database; the projector then goes on by itself",
            stream.created
        ));
    }
    if stream.last_seq < applied {
        return Some(format!(
            "stream AXON ends at seq {}, before the projector's offset (seq {applied}): its tail was lost (JetStream had not synced it to disk). {LOG_SAFE} Messages stored from now on would be skipped; to project them, run `UPDATE projector_offsets SET applied_seq = {last}, fanned_seq = LEAST(fanned_seq, {last});` in the database; the projector then goes on by itself",
            stream.last_seq,
            last = stream.last_seq
        ));
    }
    if stream.messages > 0 && stream.first_seq > applied + 1 {
        return Some(format!(
            "stream AXON starts at seq {}, but the projector has read only up to seq {applied}: messages it never read were removed (retention limits or a purge). {LOG_SAFE} Their tasks cannot be logged; to go on with what is left, run `UPDATE projector_offsets SET applied_seq = {before}, fanned_seq = LEAST(fanned_seq, {before});` in the database",
            stream.first_seq,
            before = stream.first_seq - 1
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(created: &str, first_seq: u64, last_seq: u64) -> Stream {
        Stream {
            created: created.to_owned(),
            first_seq,
            last_seq,
            messages: (last_seq + 1).saturating_sub(first_seq),
        }
    }

    #[test]
    fn the_same_stream_ahead_of_the_offset_is_fine() {
        assert_eq!(mismatch(Some("t1"), &stream("t1", 1, 10), 4), None);
        assert_eq!(mismatch(None, &stream("t1", 1, 10), 10), None);
        assert_eq!(mismatch(None, &stream("t1", 0, 0), 0), None);
        // Trimmed only below the offset: nothing unread was lost.
        assert_eq!(mismatch(Some("t1"), &stream("t1", 5, 10), 4), None);
    }

    #[test]
    fn a_recreated_stream_a_lost_tail_and_lost_unread_messages_stop_it() {
        let recreated = mismatch(Some("t1"), &stream("t2", 1, 3), 8).expect("recreated");
        assert!(recreated.contains("created again"), "{recreated}");
        let tail = mismatch(Some("t1"), &stream("t1", 1, 6), 8).expect("lost tail");
        assert!(tail.contains("applied_seq = 6"), "{tail}");
        let unread = mismatch(Some("t1"), &stream("t1", 9, 12), 4).expect("unread lost");
        assert!(unread.contains("applied_seq = 8"), "{unread}");
    }
}
