"""Render + extract throughput: our batched stage against the official code's way, on the same networks.

The official code's approach, re-implemented here from its description (not its code): one latent
at a time; mapping, synthesis, then a PIL round trip (uint8 image, Resize and CenterCrop on PIL,
ToTensor, Normalize); one classifier pass for the prediction and a second one for the penultimate
features; no ``no_grad``, so autograd records every pass. Ours: the sample stage's batched
mapping and the extract stage's ``classify_latents`` (one synthesis and one classifier pass per
batch, on-device resize, inference mode). Both start from the same seeds and keep the same
correctly classified samples (checked).

    .venv/bin/python bench/bench_extract.py --config results/default/config.yaml --classifier resnet18 \\
        --images 256 --repeats 3

Issue 8's target: at least 10x on CPU with the built-in world.
"""

from __future__ import annotations

import argparse

from common import add_run_args, alternate, median, open_run, report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=256, help="latents rendered and classified per repetition")
    p.add_argument("--cls", type=int, default=0, help="the class sampled")
    add_run_args(p)
    args = p.parse_args()
    cfg, ctx, device = open_run(args)

    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms

    from linkstyle.seeds import sample_seeds
    from linkstyle.stages.extract import classify_latents
    from linkstyle.stages.sample import map_latents

    gen, clf = ctx.generator, ctx.classifier(args.classifier)
    psi = cfg.generator.truncation_psi
    seeds = sample_seeds(cfg.sample.first_seed, args.cls, 0, args.images)
    z = gen.sample_z(seeds.tolist())
    size = clf.input_size or gen.resolution
    to_input = transforms.Compose([
        transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize(clf.mean.flatten().tolist(), clf.std.flatten().tolist()),
    ])

    def official() -> np.ndarray:
        correct = np.empty(len(seeds), dtype=bool)
        for i in range(len(seeds)):
            w = gen.mapping(z[i : i + 1].to(device), torch.tensor([args.cls], device=device), truncation_psi=psi)
            img = gen.synthesize(w)
            pil = Image.fromarray(((img[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu().numpy())
            x = to_input(pil)[None].to(device)
            logits = clf.net(x)  # pass 1: the prediction
            r = clf.features((x * clf.std + clf.mean) * 2 - 1)  # pass 2: the features (same input, back in [-1, 1])
            correct[i] = int(logits.argmax(1)) == args.cls
            _ = r.detach().cpu().numpy()
        return correct

    def ours() -> np.ndarray:
        w = map_latents(gen, z, args.cls, psi=psi, batch_size=cfg.generator.batch_size, device=device)
        _, preds, _ = classify_latents(gen, {args.classifier: clf}, w, args.cls, batch_size=cfg.generator.batch_size,
                                       device=device, precision=cfg.precision, label="bench extract")
        return preds[args.classifier] == args.cls

    agree = (official() == ours()).mean()
    times = alternate({"official approach (one by one)": official, "ours (batched)": ours}, args.repeats, device)
    rows = [{"pipeline": name, "images / s (median)": args.images / median(t), "ms / image": 1000 * median(t) / args.images}
            for name, t in times.items()]
    speedup = median(times["official approach (one by one)"]) / median(times["ours (batched)"])
    rows.append({"pipeline": "speed-up", "images / s (median)": f"{speedup:.1f}x", "ms / image": ""})
    report(f"Render + extract throughput, {args.classifier} on {cfg.generator.kind} {gen.resolution} px", rows, args, device, notes=[
        f"{args.images} latents of class {args.cls} per repetition, median of {args.repeats}, the two alternating; "
        f"batch size {cfg.generator.batch_size}; precision {cfg.precision}.",
        f"The two keep the same correctly classified samples for {agree:.1%} of the latents (the PIL round trip "
        "rounds to uint8 and resamples on PIL).",
    ])


if __name__ == "__main__":
    main()
