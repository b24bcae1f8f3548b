ALTER TABLE projector_offsets DROP COLUMN stream_created;
