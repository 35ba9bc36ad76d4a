"""Edge widths of saved evaluation sheets (`training.evaluate toy --out DIR` writes DIR/samples.png, the first 48
samples, beside DIR/scores.json), re-measured with the current l2p.sharpness: how the measurements taken before
it found objects as the toy evaluator does were re-read without generating again (docs/results.md, "The edge
metric read grain"). Prints one JSON line per folder. Run from the repo root:

    PYTHONPATH=. python docs/results/edge-metric/remeasure_grids.py EVAL_DIR [EVAL_DIR ...]
"""
import json
import sys

from PIL import Image

from l2p.sharpness import mean_edge_width

for folder in sys.argv[1:]:
    recorded = json.load(open(f"{folder}/scores.json"))
    side = recorded["size"][0]
    sheet = Image.open(f"{folder}/samples.png")
    count = min(recorded["prompts"], 48)
    samples = [sheet.crop((side * (i % 8), side * (i // 8), side * (i % 8 + 1), side * (i // 8 + 1))) for i in range(count)]
    print(json.dumps({"folder": folder, "pipeline": recorded["pipeline"], "seed": recorded["seed"], "size": side,
                      "overall": round(recorded["overall"], 3), "samples": count,
                      "edge_width_px_recorded": round(recorded["edge_width_px"], 2),
                      "edge_width_px_now": round(mean_edge_width(samples), 2)}))
