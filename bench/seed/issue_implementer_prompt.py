"""Stand-in for the seed's ``issue_implementer_prompt`` module, which was not shipped with it.

The seed prepends ``ISSUE_IMPLEMENTER_PREAMBLE`` to every prompt. For the benchmark to send the
same payloads as afk, the preamble is afk's own standing rules followed by a blank line (what
afk's ``message_text`` puts between them), handed in by the driver through the environment.
"""

import os

ISSUE_IMPLEMENTER_PREAMBLE = os.environ.get("AFK_BENCH_PREAMBLE", "").rstrip() + "\n\n"
