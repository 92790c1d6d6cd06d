# Print the function and view definitions of install script parts as
# CREATE OR REPLACE, with their comments, for an upgrade script: every
# function and view of the new version is (re)defined, in the parts'
# order, after the upgrade's own DDL has made the tables match.
function finish_if_done() {
	if (dollars % 2 == 0 && $0 ~ /;[ \t]*$/) { inside = 0; print "" }
}
/^CREATE FUNCTION / {
	inside = 1; dollars = 0
	sub(/^CREATE FUNCTION /, "CREATE OR REPLACE FUNCTION ")
}
/^CREATE VIEW / {
	inside = 1; dollars = 0
	sub(/^CREATE VIEW /, "CREATE OR REPLACE VIEW ")
}
inside {
	print
	dollars += gsub(/\$\$/, "$$")
	finish_if_done()
	next
}
/^COMMENT ON (FUNCTION|VIEW) / {
	print
	while ($0 !~ /;[ \t]*$/ && (getline) > 0)
		print
}
