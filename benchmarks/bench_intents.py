"""Benchmark the intent side: where the time of one ``ask`` goes, and what the neighbour vote costs.

    python benchmarks/bench_intents.py [--artifacts artifacts] [--messages 300]

Loads the intent model notebook 06 saved and times it one message at a time, as a chat calls it, on
held-out messages of the default split: the whole ``reply`` with the neighbour vote and without it
(the network alone, same model), and each stage: NLTK preprocessing, the sentence embedding, the
network, the vote. Prints a table with the memory each part holds, writes JSON (default
``<artifacts>/benchmarks/intents.json``). One process, the same messages for every row.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from shopbot_utils import config
from shopbot_utils.evaluate import latency_ms
from shopbot_utils.intents import IntentClassifier, intent_examples, load_intents, split_examples
from shopbot_utils.sentence import SCALE, _model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=config.artifacts_dir())
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    out = args.out or args.artifacts / "benchmarks" / "intents.json"
    clf = IntentClassifier.load(args.artifacts / "intents")
    if clf.encoder is None or clf.memory is None:
        print("this model has no sentence encoder or no neighbour vote: retrain with notebook 06's defaults")
        return 2
    examples = split_examples(intent_examples(load_intents(), config.bitext_path()))
    test = examples[examples["split"] == "test"]
    texts = test["text"].sample(min(args.messages, len(test)), random_state=config.SEED).tolist()

    weight = clf.neighbour_weight
    analysed = {t: clf.analyse(t) for t in texts}
    embedded = {t: clf.encoder([clf.pre.corrected(t)]) for t in texts}
    inputs = {t: clf.inputs([t], [analysed[t]])[0] for t in texts}

    @torch.inference_mode()
    def network(text):
        return clf.net(torch.from_numpy(inputs[text])).softmax(1)

    def reply_alone(text):
        clf.neighbour_weight = 0.0
        try:
            return clf.reply(text)
        finally:
            clf.neighbour_weight = weight

    clf.reply(texts[0])  # loads MiniLM and WordNet
    rows = {
        "reply, network + neighbour vote (shipped)": latency_ms(clf.reply, texts),
        "reply, network alone": latency_ms(reply_alone, texts),
        "  NLTK preprocessing (analyse)": latency_ms(clf.analyse, texts),
        "  sentence embedding (spelling-corrected text)": latency_ms(
            lambda t: clf.encoder([clf.pre.corrected(t)]), texts),
        "  3-layer network": latency_ms(network, texts),
        "  neighbour vote": latency_ms(lambda t: clf.neighbour_proba(embedded[t] / SCALE), texts),
    }
    network_bytes = sum(v.numel() * v.element_size() for v in clf.net.state_dict().values())
    encoder_bytes = sum(v.numel() * v.element_size() for v in _model(clf.encoder.name).state_dict().values())
    vote_bytes = clf.memory[0].nbytes  # float32 in memory (float16 on disk)
    memory = {"reply, network + neighbour vote (shipped)": network_bytes + encoder_bytes + vote_bytes,
              "reply, network alone": network_bytes + encoder_bytes,
              "  sentence embedding (spelling-corrected text)": encoder_bytes,
              "  3-layer network": network_bytes, "  neighbour vote": vote_bytes}
    table = pd.DataFrame([{"what": name, **{k: v for k, v in m.items() if k != "n"},
                           "memory_mib": memory.get(name, np.nan) / 2**20} for name, m in rows.items()])
    pd.set_option("display.width", 200)
    print(f"\n{len(texts)} held-out messages, one at a time; {len(clf.memory[1])} messages remembered for the vote; "
          f"torch threads {torch.get_num_threads()}")
    print(table.round(3).to_string(index=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"messages": len(texts), "remembered": len(clf.memory[1]),
                               "neighbour_weight": weight, "torch_threads": torch.get_num_threads(),
                               "rows": table.to_dict("records")}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
