"""Generation controls A1111 users expect on both tabs: **Skip** (drop the current image of
the batch, go on with the next), the token counters on the prompt boxes, extra-network cards,
Save and Zip under the gallery."""

from __future__ import annotations

from typing import Any

import gradio as gr

from sdcloud.ui.controls import GenerationPanel
from sdcloud.ui.extra_networks import wire_extra_networks
from sdcloud.ui.save_zip import wire_save_zip
from sdcloud.ui.token_count import counter_text, warm_up


def wire_extras(services: Any, panel: GenerationPanel) -> None:
    wire_extra_networks(services, panel.extra["extra_networks"], panel.fields["prompt"])
    wire_save_zip(services, panel)
    def skip(job_id: str | None) -> None:
        running = services.queue.running()
        if job_id is None or running is None or running.id != job_id:
            gr.Info("Nothing of yours is running.")
            return
        services.skip()

    panel.extra["skip"].click(skip, inputs=panel.job_id, outputs=None, concurrency_limit=None)
    counter, neg_counter = panel.extra["token_counters"]
    warm_up()  # load the tokenizer now, not on the first keystroke while a job runs
    for box, out in ((panel.fields["prompt"], counter), (panel.fields["negative_prompt"], neg_counter)):
        box.change(counter_text, inputs=box, outputs=out, show_progress="hidden", trigger_mode="always_last",
                   concurrency_limit=None)
