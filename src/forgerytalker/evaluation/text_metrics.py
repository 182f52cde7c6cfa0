"""Report metrics through pycocoevalcap: PTB tokenizer, BLEU-1..4, METEOR (optional), ROUGE-L and CIDEr(-D).

Inputs are `{image_id: report}` dicts with one reference per image; results are on the 0-100 scale of the
paper's tables (see `conventions.py`). The PTB tokenizer and METEOR run Java programs shipped with pycocoevalcap.
The tokenizer is called here through a pipe (same jar, flags and punctuation list as
`pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer`) so that no temporary file is written into site-packages,
Java's messages are captured, and a failed or misaligned run raises instead of shifting reports between images.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer

from .conventions import CIDER_SIGMA, METRIC_SCALE, ROUGE_BETA, check_image_ids

logger = logging.getLogger(__name__)


LINE_BREAKS = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
"""Every character that ends a line for Python's `str.splitlines` or for the Java tokenizer's lexer (CR, LF,
vertical tab, form feed, the file/group/record separators, NEL, and the Unicode line and paragraph separators).
The tokenizer reads one report per line, so each is replaced by a space before a report is sent to it."""


class PTBAlignmentError(RuntimeError):
    """The PTB tokenizer answered a different number of lines than it was sent reports."""


class JavaNotFoundError(RuntimeError):
    """A metric that runs Java was asked for on a machine without a `java` executable."""


def require_java(metric: str) -> str:
    """Returns the path of `java`, or raises `JavaNotFoundError` naming `metric` and how to install Java."""
    java = shutil.which("java")
    if java is None:
        raise JavaNotFoundError(
            f"{metric} needs Java (pycocoevalcap runs it as a Java program) but no `java` is on PATH; install a "
            "Java runtime, e.g. `apt-get install default-jre-headless` on Debian/Ubuntu"
        )
    return java


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """Tokenizes texts with pycocoevalcap's Stanford PTB tokenizer: lower-cased, punctuation tokens removed.

    Args:
        texts: one report per entry; line breaks inside a report (`LINE_BREAKS`) are replaced by spaces.

    Returns:
        The tokenized reports, one per input, tokens joined by single spaces (an empty string stays empty).

    Raises:
        PTBAlignmentError: the tokenizer did not answer exactly one line per report, so its lines cannot be
            paired with the reports (scoring them would compare reports of other images).
    """
    java = require_java("The PTB tokenizer")
    jar_directory = os.path.dirname(os.path.abspath(ptbtokenizer.__file__))
    command = [
        java,
        "-cp",
        ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR,
        "edu.stanford.nlp.process.PTBTokenizer",
        "-preserveLines",
        "-lowerCase",
        "-encoding",
        "utf-8",
    ]
    lines = "".join(LINE_BREAKS.sub(" ", text) + "\n" for text in texts)
    completed = subprocess.run(
        command, cwd=jar_directory, input=lines.encode("utf-8"), capture_output=True, check=False
    )
    stderr = completed.stderr.decode("utf-8", errors="replace").strip()
    if completed.returncode != 0:
        raise RuntimeError(f"The PTB tokenizer (Java) failed with exit code {completed.returncode}: {stderr}")
    logger.debug("PTB tokenizer: %s", stderr)
    output = completed.stdout.decode("utf-8")
    tokenized = output.split("\n")
    if tokenized and tokenized[-1] == "":
        tokenized.pop()  # the newline that ends the last line
    if len(tokenized) != len(texts):
        raise PTBAlignmentError(
            f"The PTB tokenizer answered {len(tokenized)} lines for {len(texts)} reports, so its output cannot be "
            "paired with the reports; a report probably holds a line break it splits on"
        )
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    return [" ".join(token for token in line.split() if token not in punctuation) for line in tokenized]


def tokenize_report_pairs(
    predictions: Mapping[str, str], references: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """`ptb_tokenize` over prediction and reference dicts (same ids, checked) in one Java run; ids are kept."""
    check_image_ids(references.keys(), predictions.keys(), "Predicted reports are")
    image_ids = list(references)
    tokenized = ptb_tokenize([predictions[i] for i in image_ids] + [references[i] for i in image_ids])
    predicted, referenced = tokenized[: len(image_ids)], tokenized[len(image_ids) :]
    return dict(zip(image_ids, predicted, strict=True)), dict(zip(image_ids, referenced, strict=True))


def compute_text_metrics(
    predictions: Mapping[str, str], references: Mapping[str, str], with_meteor: bool = False
) -> dict[str, float | int]:
    """Tokenizes and scores generated reports against their references.

    Args:
        predictions: image_id -> generated report.
        references: image_id -> reference report (one per image); must have the same ids as `predictions`.
        with_meteor: also compute METEOR (a second Java program, slower).

    Returns:
        `{"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"[, "METEOR"], "num_images"}` on the 0-100 scale.

    Raises:
        ImageIdMismatchError: when the id sets differ (lists the ids on each side).
        JavaNotFoundError: when Java is missing.
    """
    return score_tokenized_reports(*tokenize_report_pairs(predictions, references), with_meteor=with_meteor)


def score_tokenized_reports(
    predictions: Mapping[str, str], references: Mapping[str, str], with_meteor: bool = False
) -> dict[str, float | int]:
    """Scores reports already passed through `ptb_tokenize`; arguments and result as `compute_text_metrics`."""
    check_image_ids(references.keys(), predictions.keys(), "Predicted reports are")
    if not references:
        raise ValueError("No reports to compute text metrics on")
    hypotheses = {image_id: [predictions[image_id]] for image_id in references}
    ground_truths = {image_id: [references[image_id]] for image_id in references}
    bleu, _ = Bleu(4).compute_score(ground_truths, hypotheses, verbose=0)
    rouge_scorer = Rouge()
    rouge_scorer.beta = ROUGE_BETA
    rouge, _ = rouge_scorer.compute_score(ground_truths, hypotheses)
    cider, _ = Cider(sigma=CIDER_SIGMA).compute_score(ground_truths, hypotheses)
    result = {f"BLEU-{n}": METRIC_SCALE * float(score) for n, score in enumerate(bleu, start=1)}
    result["ROUGE-L"] = METRIC_SCALE * float(rouge)
    result["CIDEr"] = METRIC_SCALE * float(cider)
    if with_meteor:
        result["METEOR"] = METRIC_SCALE * meteor_score(ground_truths, hypotheses)
    result["num_images"] = len(references)
    return result


def meteor_score(ground_truths: Mapping[str, list[str]], hypotheses: Mapping[str, list[str]]) -> float:
    """pycocoevalcap's corpus METEOR (a fraction) of tokenized `{id: [text]}` dicts; its Java process is ended after."""
    require_java("METEOR")
    meteor = _ClosableMeteor()
    try:
        score, _ = meteor.compute_score(ground_truths, hypotheses)
    except ValueError as error:  # the Java process died and answered an empty line instead of a score
        meteor.close()
        raise RuntimeError(f"METEOR (Java) returned no score: {meteor.stderr_text() or error}") from error
    finally:
        meteor.close()
    return float(score)


class _ClosableMeteor(Meteor):
    """pycocoevalcap's `Meteor` that ends its Java process on `close()`.

    The original only ends it in `__del__`, which waits on a lock that a failed `compute_score` leaves held.
    """

    def close(self) -> None:
        process = self.meteor_p
        if process.poll() is None:
            process.kill()
        process.wait()
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()

    def stderr_text(self) -> str:
        """What the (ended) Java process wrote to stderr."""
        return self.meteor_p.stderr.read().decode("utf-8", errors="replace").strip()

    def __del__(self) -> None:
        self.close()
        self.meteor_p.stdout.close()
        self.meteor_p.stderr.close()
