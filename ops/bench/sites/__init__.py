"""`charter bench sites`: how fast a site with many active extensions takes one more, beside how fast
plugins install, both measured in the same run on the same database with the same concurrency.

One fresh database `charter_bench_<random>` on ONE PostgreSQL server (CHARTER_DATABASE_URL's, or an
embedded one), dropped at the end. Setup (ops/bench/sites/setup.py), all through the application bus:
`--extensions` plugins installed (200 by default; site rules in their manifests: capabilities, an
exclusive one each, dependencies in three tiers with version ranges, a declared conflict, a
recommendation, a configuration schema), `--sites` sites (4 per client by default), each with every one
of those plugins activated (so each site runs `--extensions` active extensions), and `--spares` more
plugins per site for the measured activations.

Then, in `--rounds` rounds (the best round of each phase counts: on a shared machine a slowed round says
nothing about the code), each round one phase after the other on the same runtime, `--clients` tasks:

(a) InstallPlugin        each task installs new plugins (capabilities, a configuration schema and a
                         configuration; no dependencies, so no two installs share a stream).
(b) ActivateExtension    each task, at its own sites in turn, activates each site's spare plugins one by one
                         (the full validation policy against every extension active there, the
                         configuration checked against the schema and hashed); the site grows by one
                         extension per activation, so it runs `--extensions` or more throughout.
(c) DeactivateExtension  what (b) activated, deactivated again so the next round starts from the same
                         sites (measured and shown; not in the ratio).

Target: (b) >= 0.5x (a). The report is printed and written to `<report>/sites-<timestamp>.json` and `.md`.
"""
