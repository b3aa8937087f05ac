"""Loads a Tunelab-exported LoRA adapter with Hugging Face PEFT and compares its logits with the engine's.

The base model folder (config.json + model.safetensors, GPT-2 layout) goes to transformers' GPT2LMHeadModel, the
adapter folder (adapter_config.json + adapter_model.safetensors, as Tunelab's Runs panel or `tunelab train` writes it)
to peft.PeftModel.from_pretrained; the engine's logits for the same token ids come from
`node scripts/interop/engine-logits.mjs` (JSON on stdin or --engine FILE). Prints the largest absolute difference
and whether greedy tokens agree at every position; exits 1 when the difference exceeds --atol.

    node scripts/interop/engine-logits.mjs --model M --adapter A --ids 1,2,3 > engine.json
    python scripts/interop/peft_check.py --model M --adapter A --engine engine.json

Needs torch, transformers and peft (fp32 on the CPU is enough for the small models this checks).
"""

import argparse
import json
import sys

import torch
from peft import PeftModel
from transformers import GPT2LMHeadModel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="base model folder (GPT-2 layout)")
    parser.add_argument("--adapter", required=True, help="PEFT adapter folder exported by Tunelab")
    parser.add_argument("--engine", default="-", help="engine-logits.mjs output (default: stdin)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed |logit difference| (default 1e-4)")
    args = parser.parse_args()

    engine = json.load(sys.stdin if args.engine == "-" else open(args.engine, encoding="utf-8"))
    ids = torch.tensor([engine["ids"]], dtype=torch.long)
    ours = torch.tensor(engine["logits"], dtype=torch.float64)

    torch.backends.cuda.matmul.allow_tf32 = False
    base = GPT2LMHeadModel.from_pretrained(args.model, torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, args.adapter)
    model.eval()  # LoRA dropout off, as the engine generates
    with torch.no_grad():
        peft_logits = model(input_ids=ids).logits[0].to(torch.float64)
    with torch.no_grad(), model.disable_adapter():
        without = model(input_ids=ids).logits[0].to(torch.float64)

    diff = (peft_logits - ours).abs().max().item()
    adapter_effect = (peft_logits - without).abs().max().item()
    same_tokens = bool((peft_logits.argmax(-1) == ours.argmax(-1)).all())
    report = {
        "engine_adapter": engine.get("adapter"),
        "positions": len(engine["ids"]),
        "vocab": peft_logits.shape[-1],
        "max_abs_diff": diff,
        "adapter_effect": adapter_effect,
        "greedy_tokens_agree": same_tokens,
        "lora_modules": sorted({n.split(".lora_")[0].split("base_model.model.")[-1] for n, _ in model.named_parameters() if "lora_" in n}),
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=2))
    if adapter_effect <= 10 * args.atol:
        print("the adapter barely changes the logits: this check would not tell a wrong import from a right one", file=sys.stderr)
        return 1
    return 0 if diff <= args.atol and same_tokens else 1


if __name__ == "__main__":
    sys.exit(main())
