-- Which AXON stream the projector's offsets belong to (its creation time, RFC 3339), so a
-- recreated stream is noticed instead of its first messages being skipped.
ALTER TABLE projector_offsets ADD COLUMN stream_created TEXT;
