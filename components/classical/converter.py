"""skl2onnx 1.20 as the classical family's export uses it: Kiln's n-gram counts registered
with its text-vectorizer converter, and the mends of what that converter exports wrongly.

Beside the tokens (see components.classical.features), what the converter cannot express
and what Kiln does instead:

- lowercase: becomes a StringNormalizer whose en_US.UTF-8 locale must be installed where
  the model is served (on slim images the session fails to load), and whose case mapping
  is not str.lower's (İ, final sigma). Kiln keeps case; on BBC val lowercasing gained
  nothing.
- strip_accents, a custom preprocessor or tokenizer: refused.
- sublinear_tf is converted as log(1 + tf), not 1 + log(tf); and the Tokenizer pads the
  short rows of a batch with "#", a real "char" token, so a text's scores depended on
  its batch mates. Kiln mends both in the exported graph.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from components.classical.features import NgramCounts

# params.yaml's export.opset; every op used (Tokenizer, TfIdfVectorizer, LinearClassifier,
# Where) is in ONNX Runtime 1.20, the oldest Kiln allows.
OPSET = {"": 17, "ai.onnx.ml": 3}


def register() -> None:
    """NgramCounts goes through skl2onnx's text-vectorizer converter, which takes tuple
    n-grams as they are."""
    from skl2onnx import update_registered_converter
    from skl2onnx.operator_converters.text_vectoriser import convert_sklearn_text_vectorizer
    from skl2onnx.shape_calculators.text_vectorizer import calculate_sklearn_text_vectorizer_output_shapes

    update_registered_converter(
        NgramCounts,
        "KilnNgramCounts",
        calculate_sklearn_text_vectorizer_output_shapes,
        convert_sklearn_text_vectorizer,
        options={
            "tokenexp": None,
            "separators": None,
            "nan": [True, False],
            "keep_empty_string": [True, False],
            "locale": None,
        },
    )


def mend(graph: onnx.GraphProto, sublinear_tf: bool, binary: bool) -> None:
    """Mend what skl2onnx 1.20 exports wrongly (see the module's docstring)."""
    # "" is never a token (every pattern matches at least one character), so padding
    # makes no n-gram.
    pad = next(a for a in _only(graph, "Tokenizer").attribute if a.name == "pad_value")
    pad.CopyFrom(helper.make_attribute("pad_value", ""))
    if sublinear_tf:
        _sublinear(graph)
    if binary:
        _halve(graph)


def _only(graph: onnx.GraphProto, op_type: str) -> onnx.NodeProto:
    found = [node for node in graph.node if node.op_type == op_type]
    if len(found) != 1:
        raise RuntimeError(
            f"expected one {op_type} node in skl2onnx's graph, found {len(found)}; "
            f"the mends in {__name__} were written for skl2onnx 1.20"
        )
    return found[0]


def _sublinear(graph: onnx.GraphProto) -> None:
    """Replace skl2onnx's log(tf + 1) by scikit-learn's 1 + log(tf), left at 0 where tf is 0."""
    log = _only(graph, "Log")
    add = next(node for node in graph.node if log.input[0] in node.output)
    constants = {init.name for init in graph.initializer}
    tf = next(name for name in add.input if name not in constants)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(0, np.float32), "kiln_zero"),
            numpy_helper.from_array(np.array(1, np.float32), "kiln_one"),
        ]
    )
    # Log(0) is -inf, but Where only takes it where tf > 0.
    mended = [
        helper.make_node("Greater", [tf, "kiln_zero"], ["kiln_counted"], name="kiln_counted"),
        helper.make_node("Log", [tf], ["kiln_log_tf"], name="kiln_log_tf"),
        helper.make_node("Add", ["kiln_log_tf", "kiln_one"], ["kiln_sublinear_tf"], name="kiln_sublinear_tf"),
        helper.make_node("Where", ["kiln_counted", "kiln_sublinear_tf", tf], [log.output[0]], name="kiln_sublinear"),
    ]
    nodes = list(graph.node)
    at = nodes.index(add)
    nodes = nodes[:at] + mended + [node for node in nodes[at:] if node is not add and node is not log]
    del graph.node[:]
    graph.node.extend(nodes)
    unused = set(add.input) - {tf}
    kept = [init for init in graph.initializer if init.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _halve(graph: onnx.GraphProto) -> None:
    """For two classes skl2onnx's raw scores are [-z, z], whose softmax is sigmoid(2z);
    halved, it is scikit-learn's [1 - sigmoid(z), sigmoid(z)]."""
    producer = next(node for node in graph.node if "logits" in node.output)
    producer.output[list(producer.output).index("logits")] = "kiln_scores"
    graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "kiln_half"))
    graph.node.append(helper.make_node("Mul", ["kiln_scores", "kiln_half"], ["logits"], name="kiln_halve"))
