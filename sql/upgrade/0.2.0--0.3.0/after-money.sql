COMMENT ON COLUMN llm.usage.error IS 'Why a call that did not succeed failed (the error''s message, cut at 127 bytes); NULL for a call that succeeded';
