"""`charter bench report`: an as-of compliance report of a site whose stream holds `--events` events
(default 10,000), next to the same report read from the read models now, measured in the same run.

One fresh database `charter_bench_<random>` (CHARTER_DATABASE_URL's server, or an embedded one), dropped
at the end, holding one site written by ops/bench/report/fill.py: plugins with two compliance aspects
each, activated, reconfigured (which invalidates their signoffs), signed again and deactivated, round
after round, until the site's stream holds the events asked for. The `sites` and `identity` projections
then fold the log, and one untimed as-of report at the head takes the site's snapshots (every
`--snapshot-every` versions, as `report_snapshot_every` does in the server). Then, `--rounds` times
each (the median counts):

(a) read model  the report of the site now from the read models (projections/sites/report.py): the same
                document, JSON rendered.
(b) as of       the report as of the position of the stream's event at 90% (`as_of=position:N`), from
                the latest snapshot at or below it: the events after it read and folded, JSON rendered.
(c) as of, worst  as (b), at the last version before the next snapshot (`every - 1` events to fold).
(d) as of, no snapshots  as (b), the stream replayed whole (snapshots off).

Every phase lists the changes of the last `--window` events before its point (`since=position:M`), so
they carry the same amount of history. Target: (b) at most 5x the time of (a). The run also checks that
(a) and the as-of report at the read model's checkpoint position are byte-identical.
"""
