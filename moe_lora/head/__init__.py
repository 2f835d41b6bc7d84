"""Students against a LoRA teacher on a full attention head: a teacher-student simulation.

See docs/attention_head.md for the setting as implemented and what the runs show. A frozen random
"pre-trained" head (W_Q0, W_K0 in R^{d x d_k}, W_V0 in R^{d x d_v}, entries N(0, 1/d)) reads
sequences X of N tokens; its whole N x d_v output is

    H(X) = G(X (W_Q0 + B_Q A_Q) W_K0^T X^T / sqrt(d_k)) X (W_V0 + B_V A_V)

(``forward``). A teacher adds a rank-r* update (``teacher``); a sample is n sequences with
Y = H*(X) + eps. Students of rank r >= r* (``students``: free LoRA factors, the learned MLP
generator of our reconstruction of RepLoRA, the theory's fixed shared maps) are fitted by Adam with
early stopping and an optional least-squares finish (``fitting``), per seed and vmapped
(``simulate``), and compared paired by seed (``statistics``).

Modules, one concept each: ``config`` (HeadConfig), ``forward`` (the head), ``students``,
``teacher``, ``fitting``, ``simulate`` (keys, jitted blocks, table rows), ``statistics``.
"""

from .config import FINISHERS as FINISHERS
from .config import GATINGS as GATINGS
from .config import INPUTS as INPUTS
from .config import TRUTHS as TRUTHS
from .config import HeadConfig as HeadConfig
from .fitting import UNDERFIT_RATIO as UNDERFIT_RATIO
from .fitting import HeadRecord as HeadRecord
from .fitting import finish_least_squares as finish_least_squares
from .fitting import fit_from as fit_from
from .fitting import fit_replicate as fit_replicate
from .fitting import split_sizes as split_sizes
from .fitting import train_student as train_student
from .forward import check_head as check_head
from .forward import gate_matrix as gate_matrix
from .forward import head_output as head_output
from .forward import head_outputs as head_outputs
from .forward import mean_squared_error as mean_squared_error
from .forward import sample_sequences as sample_sequences
from .forward import zero_update as zero_update
from .simulate import METRICS as METRICS
from .simulate import TRACE_COUNT as TRACE_COUNT
from .simulate import head_rows as head_rows
from .simulate import head_unit as head_unit
from .simulate import seed_list as seed_list
from .simulate import simulate_head as simulate_head
from .simulate import teacher_and_test as teacher_and_test
from .statistics import FIT_MIN_N as FIT_MIN_N
from .statistics import HEAD_SLOPES as HEAD_SLOPES
from .statistics import REFERENCE as REFERENCE
from .statistics import crossing_fraction as crossing_fraction
from .statistics import data_efficiency as data_efficiency
from .statistics import equal_error_ratio as equal_error_ratio
from .statistics import error_bands as error_bands
from .statistics import improvement as improvement
from .statistics import power_law as power_law
from .statistics import rate_slopes as rate_slopes
from .students import STUDENTS as STUDENTS
from .students import FixedMaps as FixedMaps
from .students import GeneratorParams as GeneratorParams
from .students import HeadStudent as HeadStudent
from .students import LatentParams as LatentParams
from .students import LearnedGenerator as LearnedGenerator
from .students import LoRAStudent as LoRAStudent
from .students import SharedFamily as SharedFamily
from .students import generator_factors as generator_factors
from .students import parameter_counts as parameter_counts
from .students import student_of as student_of
from .teacher import MAX_GATE_SATURATION as MAX_GATE_SATURATION
from .teacher import MIN_GATE_CHANGE as MIN_GATE_CHANGE
from .teacher import Teacher as Teacher
from .teacher import draw_family as draw_family
from .teacher import draw_teacher as draw_teacher
from .teacher import gate_diagnostics as gate_diagnostics
