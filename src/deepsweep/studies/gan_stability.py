"""GAN stability: GAN, WGAN (weight clipping) and WGAN-GP on the ring of 8 Gaussians and on MNIST: the modes
(digit classes) their samples cover."""

from __future__ import annotations

import statistics
from pathlib import Path

from deepsweep.studies import (
    Finding, Study, clearly_below, group, mean_curve, mean_std, pyplot, save_figure, stage_artifact,
)

METHODS = ("gan", "wgan", "wgan_gp")
RING_MODES = "pretrain.samples_modes_covered"
RING_QUALITY = "pretrain.samples_high_quality"
CLASSES = "evaluate.generated_classes_covered"
CLASS_KL = "evaluate.generated_class_kl"


def analyze(rows: list[dict], folder: Path, budget: str) -> Finding:
    by_data = group(rows, "data.name")
    ring = group(by_data.get("ring", []), "pretrain.name")
    mnist = group(by_data.get("mnist", []), "pretrain.name")
    methods = [m for m in METHODS if m in ring or m in mnist]

    def values(runs: dict, method: str, metric: str) -> list[float]:
        return [r["metrics"][metric] for r in runs.get(method, []) if metric in r["metrics"]]

    plt = pyplot()
    fig, (modes_ax, quality_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for method in methods:
        for ax, metric in ((modes_ax, "samples/modes_covered"), (quality_ax, "samples/high_quality")):
            curve = mean_curve(ring.get(method, []), metric, stage="pretrain")
            if curve:
                ax.plot([e + 1 for e, _, _ in curve], [v for _, v, _ in curve], marker=".", label=method)
    modes_ax.set_ylabel("modes covered of 8 (mean over seeds)")
    quality_ax.set_ylabel("high-quality samples (within 3 std)")
    for ax in (modes_ax, quality_ax):
        ax.set_xlabel("pretraining epoch")
        ax.grid(alpha=0.3)
    modes_ax.legend(fontsize=8)
    fig.suptitle("ring of 8 Gaussians: 2,500 samples from fixed codes after each epoch", fontsize=10)
    figures = [save_figure(fig, folder / "gan_stability_ring.png")]
    # One seed's samples over training (ring) and its last samples (MNIST), per method, as pretraining drew them.
    for data, runs, artifact in (("ring", ring, "figures/samples_over_training.png"), ("mnist", mnist, "figures/samples.png")):
        for method in methods:
            if runs.get(method):
                first = min(runs[method], key=lambda r: int(r["params"]["seed"]))
                copied = stage_artifact(first, "pretrain", artifact, folder / f"gan_stability_{data}_{method}.png")
                if copied is not None:
                    figures.append(copied)

    lines = ["| method | ring: modes covered (of 8) | ring: high-quality samples | ring: modes reached by the "
             "classifier's labels | MNIST: digit classes covered (of 10) | MNIST: KL of class shares from uniform (nats) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for method in methods:
        lines.append(f"| `{method}` | {mean_std(values(ring, method, RING_MODES), 2)} | "
                     f"{mean_std(values(ring, method, RING_QUALITY))} | {mean_std(values(ring, method, CLASSES), 2)} | "
                     f"{mean_std(values(mnist, method, CLASSES), 2)} | {mean_std(values(mnist, method, CLASS_KL))} |")
    table = "\n".join(lines)
    if not (values(ring, "gan", RING_MODES) and values(ring, "wgan_gp", RING_MODES)):
        return Finding(table, "This budget lacks the GAN or WGAN-GP runs on the ring.", "not tested", figures)

    def mean(runs: dict, method: str, metric: str) -> float:
        return statistics.mean(values(runs, method, metric)) if values(runs, method, metric) else float("nan")

    ring_held = clearly_below(values(ring, "gan", RING_MODES), values(ring, "wgan_gp", RING_MODES))
    mnist_held = bool(values(mnist, "gan", CLASSES) and values(mnist, "wgan_gp", CLASSES)
                      and clearly_below(values(mnist, "gan", CLASSES), values(mnist, "wgan_gp", CLASSES)))
    held = "yes" if ring_held and mnist_held else ("in part" if ring_held or mnist_held else "no")
    measured = ("On the ring, after the last epoch the samples cover "
                + ", ".join(f"{mean(ring, m, RING_MODES):.1f} modes ({m})" for m in methods if m in ring)
                + " of 8, with "
                + ", ".join(f"{mean(ring, m, RING_QUALITY):.2f}" for m in methods if m in ring)
                + " of them high quality."
                + (" On MNIST a fixed classifier finds "
                   + ", ".join(f"{mean(mnist, m, CLASSES):.1f} ({m})" for m in methods if m in mnist)
                   + " of the 10 digits among 1,000 samples." if mnist else "")
                + " WGAN-GP covers more than the GAN beyond the spread over seeds: on the ring "
                f"{'yes' if ring_held else 'no'}, on MNIST {'yes' if mnist_held else 'no (not run)' if not mnist else 'no'}.")
    return Finding(table, measured, held, figures)


# 200 epochs: at 100 the WGAN-GP's samples had spread along the ring but were still gathering onto its modes.
RING_FULL = ["experiment=ring_gan", f"pretrain={','.join(METHODS)}", "pretrain.epochs=200", "seed=0,1,2"]
MNIST = ["data=mnist", f"pretrain={','.join(METHODS)}", "model.hidden_dims=[256,128]", "finetune.load_pretrained=false"]

STUDY = Study(
    name="gan_stability",
    title="GAN stability: mode collapse in GAN, WGAN and WGAN-GP",
    claim=("A plain GAN is unstable and collapses onto a few modes of the data; the Wasserstein GAN, with its "
           "critic kept Lipschitz by a gradient penalty (WGAN-GP), trains stably and covers them all "
           "(Arjovsky et al. 2017; Gulrajani et al. 2017; the ring of 8 Gaussians of Metz et al. 2017)."),
    setup=("Ring: the `ring_gan` experiment (8 Gaussians of std 0.02 on a circle of radius 2, 10,000 points; an MLP "
           "discriminator 2-128-128 and a dense generator 16-128-128-2; 79 steps an epoch, batch 128, Adam at "
           "1e-3 with beta1 0.5 for all three, each with its own option file's critic steps and Lipschitz "
           "constraint) but 200 epochs, 3 seeds: after every epoch 2,500 samples from fixed codes, a mode covered when at least 20 "
           "of them lie within 3 std of it (VEEGAN's measure); *reached*: the modes the fine-tuned classifier gives "
           "at least 1% of 1,000 samples, wherever they lie. MNIST: 20,000 training images, an MLP discriminator "
           "784-256-128 and a dense generator 32-128-256-784, 30 epochs with each option file's own learning rate, "
           "2 seeds; 1,000 samples labelled by the fine-tuned classifier, which never loads pretrained weights "
           "(`finetune.load_pretrained=false`), so every method is judged by the same classifier per seed (its test "
           "accuracy is in the runs); a digit counts as covered at 1% of the samples."),
    sweeps={
        "full": [RING_FULL, [*MNIST, "data.train_subset=20000", "pretrain.epochs=30", "trainer.max_epochs=3", "seed=0,1"]],
        # The ring alone: the MNIST sweep's path (its figures, the classifier's labels) is the same code.
        "small": ["experiment=ring_gan", "pretrain=gan,wgan_gp", "data.num_train=1000", "pretrain.epochs=2",
                  "trainer.max_epochs=1", "seed=0"],
    },
    analyze=analyze,
)
