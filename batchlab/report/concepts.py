"""The ideas behind the studies, in our own words, and which study needs which.

Each text is short HTML (a title and two or three paragraphs); references name the papers a
reader can follow up. ``STUDY_CONCEPTS`` maps a study's name to the concepts its page
explains; sweeps have their own list (``SWEEP_CONCEPTS``).
"""

from __future__ import annotations

CONCEPTS: dict[str, tuple[str, str]] = {
    "batch-epoch-update": ("Batch, epoch and update", """
<p>A training set has <b>N</b> samples. A <b>batch</b> is the B samples whose mean loss gives one
gradient estimate; one <b>update</b> (also called an iteration or step) moves the weights once
along it. An <b>epoch</b> is one pass over all N samples, so it holds ceil(N/B) updates
(batchlab keeps the last, smaller batch and averages over its real rows only). B = 1 is
stochastic gradient descent, B = N is batch gradient descent, anything between is mini-batch.</p>
<p>The same run therefore has three clocks: <i>epochs</i>, <i>updates</i> and <i>samples seen</i>
(B &times; updates). With N = 500, an epoch at B = 1 makes 500 small, noisy updates; at
B = 500 it makes one exact one. Plotted against epochs, small batches look fast because they
update more often; against updates, large batches look fast because each update saw more data;
samples seen measures the data (and roughly the compute) used. Each chart here can switch
between the three: a claim such as &ldquo;small batches learn faster&rdquo; is only meaningful
with its clock named.</p>"""),
    "gradient-noise": ("Gradient noise and the noise scale", """
<p>A mini-batch gradient is a random estimate of the full-data gradient G. Averaging B
per-sample gradients keeps its mean at G and divides its covariance by B: the expected squared
norm is |G|&sup2; + tr(&Sigma;)/B, where &Sigma; is the covariance of single-sample gradients
(drawing without replacement multiplies the noise term by (N&minus;B)/(N&minus;1), which
vanishes at B = N).</p>
<p>The <b>simple noise scale</b> B<sub>simple</sub> = tr(&Sigma;)/|G|&sup2; is the batch size at
which the noise and the signal in that estimate are about equal. Far below it an update is
mostly noise and consecutive updates average it out, so a batch twice as large is worth about
two updates; far above it the estimate is already nearly exact and extra samples are wasted.
It usually grows during training as |G| shrinks. With a constant learning rate this noise
also keeps SGD moving: it settles in a region around a minimum, not at it, and the region
shrinks as B grows or the learning rate falls (McCandlish et al. 2018).</p>"""),
    "critical-batch": ("Critical batch size", """
<p>Tune the learning rate separately for every batch size and count the updates S needed to
reach a fixed target (say 95 % test accuracy). Across many problems the counts follow
S(B) &asymp; S<sub>min</sub> (1 + B<sub>crit</sub>/B), so the samples used are
E = B&middot;S &asymp; E<sub>min</sub> + S<sub>min</sub>&middot;B.</p>
<p>Below the <b>critical batch size</b> B<sub>crit</sub>, doubling B almost halves the updates
for the same number of samples (<i>perfect scaling</i>: with parallel hardware, free speed).
Far above it, doubling B barely cuts the updates and doubles the samples (<i>no gain</i>).
Around it lie diminishing returns. B<sub>crit</sub> is not a property of the model alone: it
grows with the difficulty of the target and is roughly predicted by the gradient noise scale
(McCandlish et al. 2018; Shallue et al. 2019). Comparisons at one shared learning rate
confuse the batch size's effect with a badly tuned learning rate.</p>"""),
    "generalization-gap": ("Generalization gap", """
<p>The <b>generalization gap</b> is how much better a model does on the data it trained on than
on held-out data; batchlab reports it as train accuracy &minus; test accuracy at the end of a
run (gap_acc). A gap alone is not a failure: what matters is test accuracy, and a gap tells
whether more data, regularisation or earlier stopping could help.</p>
<p>Large batches trained for the same epochs at the same learning rate often end with lower
test accuracy (Keskar et al. 2017). Much of that difference comes from making fewer updates,
and shrinks when the learning rate is scaled with B or the large batch trains longer
(Hoffer et al. 2017; Goyal et al. 2017). Whether a residual gap remains at equal tuning and
budget is what several studies here measure, with intervals over seeds.</p>"""),
    "sharpness": ("Sharpness", """
<p><b>Sharpness</b> measures how fast the loss rises as the weights move away from where
training ended; the usual number is the largest eigenvalue &lambda;<sub>max</sub> of the
Hessian (the matrix of second derivatives of the loss). A flat minimum has a small
&lambda;<sub>max</sub>; a sharp one a large &lambda;<sub>max</sub>.</p>
<p>Sharpness limits the learning rate: gradient descent with learning rate &eta; can only stay
where &lambda;<sub>max</sub> &lt; 2/&eta; (2(1+&mu;)/&eta; with heavy-ball momentum &mu;), and
training often rises to that edge (Cohen et al. 2021). Small, noisy batches tend to end in
flatter regions than large ones, which has been linked to better test accuracy (Keskar et al.
2017) &mdash; a correlation, not a law: rescaling the weights can change sharpness without
changing the function (Dinh et al. 2017).</p>"""),
    "lr-scaling": ("Learning rate and batch size", """
<p>The learning rate and the batch size act together. One SGD update with learning rate &eta;
and batch B moves the weights by &eta; times a gradient whose noise shrinks like 1/B, so the
ratio &eta;/B sets how noisy training is (Smith &amp; Le 2018). Two rules keep a tuned setting
when B changes: the <b>linear rule</b> &eta; &prop; B (Goyal et al. 2017, usually with a short
warmup) and the <b>square-root rule</b> &eta; &prop; &radic;B (Hoffer et al. 2017).</p>
<p>Both hold only up to a point: past the critical batch size, or past the largest stable
learning rate (set by sharpness), a larger learning rate no longer helps and can make
training diverge. Re-tuning the learning rate at each batch size is the fair comparison.</p>"""),
    "early-stopping": ("How many epochs", """
<p>Test loss typically falls, bottoms out and then rises while training loss keeps falling:
the model starts to fit noise in the training set. The epoch with the best validation (here:
test) score is often not the last one. <b>Early stopping</b> watches that score and stops after
it has not improved for a number of epochs (the patience), usually restoring the best
weights.</p>
<p>How many epochs that takes depends on the batch size, because an epoch at a small batch
holds more updates: compare runs by updates or samples seen as well as by epochs.</p>"""),
    "regularisation": ("Regularisation and batch size", """
<p><b>Regularisers</b> trade a little fit to the training set for a better fit to new data.
<b>Dropout</b> zeroes a random share of the hidden units at every update (Srivastava et al.
2014); <b>weight decay</b> pulls the weights towards zero at every update (Krogh &amp; Hertz
1992), so at a fixed learning rate its total effect grows with the number of updates, which a
larger batch lowers; <b>batch norm</b> normalises each layer by the statistics of the current
batch (Ioffe &amp; Szegedy 2015), whose noise acts as a regulariser that fades as B grows.
<b>Ghost batch norm</b> takes those statistics over small virtual batches inside a large one
(Hoffer et al. 2017), keeping that noise at large B.</p>
<p>Over-fitting shows in the learning curves as the test loss turning up while the training
loss keeps falling; the epoch where it turns is where more training starts to hurt.</p>"""),
}

STUDY_CONCEPTS: dict[str, tuple[str, ...]] = {
    "brownlee": ("batch-epoch-update", "gradient-noise"),
    "gradient-norm": ("gradient-noise", "batch-epoch-update"),
    "distance": ("lr-scaling", "generalization-gap", "sharpness"),
    "lr-recovery": ("generalization-gap", "lr-scaling"),
    "optimizer": ("generalization-gap", "lr-scaling"),
    "generalization": ("generalization-gap", "sharpness"),
    "convex": ("gradient-noise", "lr-scaling"),
    "epochs": ("early-stopping", "batch-epoch-update"),
    "critical-batch": ("critical-batch", "gradient-noise"),
    "throughput": ("batch-epoch-update", "critical-batch"),
    "regularization": ("regularisation", "early-stopping"),
}
SWEEP_CONCEPTS = ("critical-batch", "lr-scaling")
DEFAULT_CONCEPTS = ("batch-epoch-update",)


def concepts_for_study(name: str) -> tuple[str, ...]:
    return STUDY_CONCEPTS.get(name, DEFAULT_CONCEPTS)


def concepts_html(names: tuple[str, ...], open_first: bool = True) -> str:
    """The concepts as collapsible blocks (the first one open if ``open_first``)."""
    parts = []
    for i, name in enumerate(names):
        title, text = CONCEPTS[name]
        opened = " open" if open_first and i == 0 else ""
        parts.append(f'<details class="concept"{opened}><summary>The idea: {title}</summary>{text.strip()}</details>')
    return '<div class="concepts">' + "".join(parts) + "</div>"
