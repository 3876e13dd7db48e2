"""Train RelViT: `python train.py task=upstream`, `task=downstream pretrained=<ckpt>`, `task=joint`.

Any config value can be overridden on the command line; see conf/train.yaml and README.md.
"""
import hydra
from omegaconf import DictConfig

from relvit.cli import exit_on_user_error, report_test_accuracy, run_main, train_with_finetune


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    summary = train_with_finetune(cfg)
    report_test_accuracy(summary)
    if summary.get("pretrain"):  # what pre-training learned: its encoder's kNN next to a random one's
        from relvit.evaluation.report import report_pretraining_knn

        report_pretraining_knn(cfg, summary)
    # a number for Hydra's sweepers to optimise: the monitored metric of the (last phase's) best checkpoint
    return summary.get("val", {}).get(summary.get("monitor"))


if __name__ == "__main__":
    import sys

    from relvit.runs.distributed import adopt_parent_job

    sys.argv = adopt_parent_job(sys.argv)  # a DDP rank runs rank zero's job, in rank zero's run dir
    run_main(main)
