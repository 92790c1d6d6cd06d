-- Money not spent silently: the reason a call failed, in its usage row.
ALTER TABLE llm.usage ADD COLUMN error text;
