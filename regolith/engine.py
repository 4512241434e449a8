"""The training engine: the learning-rate schedule, the device, and one training epoch and one validation pass.

Training (``regolith.train``), DDP ranks and the benchmark (``benchmarks/bench.py``) all call
``train_epoch`` and ``validate``: one engine, so what the benchmark times is what a run trains.
Everything here takes tensors and plain values and returns plain dicts of floats keyed as logged
(``names``); nothing here knows MLflow, files or arguments.
"""

import math
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from regolith import CLASSES, IGNORE_INDEX, Refused, augment, cache, metrics, model as segformer, names

MIN_LR = 1e-7
WEIGHT_DECAY = 1e-4  # the original's AdamW weight decay (torch's default is 0.01); train's default, the bench's


# ---- the learning rate: a pure function of the step ---------------------------------------------

def get_lr(step: int, total_steps: int, peak_lr: float) -> float:
    """Cosine decay per step from ``peak_lr`` to 1e-7 over the whole run (epochs x steps per epoch)."""
    progress = min(step / max(total_steps, 1), 1.0)
    return MIN_LR + 0.5 * (peak_lr - MIN_LR) * (1 + math.cos(math.pi * progress))


def epoch_lr(epoch: int, epochs: int, peak_lr: float) -> float:
    """The original's per-epoch cosine (``CosineAnnealingLR(T_max=epochs, eta_min=1e-7)`` stepped once an epoch):
    epoch k, counted from 1, trains at the cosine value of (k - 1) / epochs."""
    return get_lr(epoch - 1, epochs, peak_lr)


def lr_schedule(schedule: str, peak_lr: float, epochs: int, steps_per_epoch: int):
    """The learning rate as a pure function of the step, so the step is the whole schedule state on resume."""
    if schedule == "epoch":
        return lambda step: epoch_lr(step // steps_per_epoch + 1, epochs, peak_lr)
    return lambda step: get_lr(step, epochs * steps_per_epoch, peak_lr)



# ---- the device and the module the loop calls -------------------------------------------------

def pick_device() -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per torchrun rank


def device_name(device: torch.device) -> str:
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else "cpu"


def resolve_compile(compile_model: str, device: torch.device) -> bool:
    """true/false as given; auto compiles on CUDA only (on the CPU the compile costs more than it saves)."""
    return compile_model == "true" or (compile_model == "auto" and device.type == "cuda")


def prepare(net, device: torch.device, compile_model: bool, world: int = 1):
    """The module the loop calls: channels_last on CUDA, DDP under torchrun, torch.compile'd when asked.

    ``net`` itself stays unwrapped, so checkpoints keep the plain state-dict names.
    """
    module = net
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)
    if world > 1:
        if device.type == "cuda":  # one set of batch statistics over the global batch, as in one process
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        module = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if not compile_model:
        return module
    first_forward(net, device)
    return torch.compile(module)


def first_forward(net, device: torch.device):
    """One eager forward on a blank frame, so that torch.compile sees the whole model as one graph.

    transformers installs SegFormer's output-capturing hooks on the model's first forward, under a
    threading lock that dynamo cannot trace. Compiled cold, the model splits there: 7 graph breaks
    and 19 compiled frames on a tiny SegFormer, against one graph per mode (train, eval) once the hooks
    exist. Eval mode under no_grad draws no dropout and updates no BatchNorm statistics, so
    training is unchanged by it.
    """
    mode = net.training
    net.eval()
    with torch.no_grad():
        net(pixel_values=torch.zeros(1, 3, 64, 64, device=device))
    net.train(mode)


def keep_on(split, device: torch.device, budget: float = 0.5):
    """Move a decoded split to the GPU when it fits in ``budget`` of free memory: no copy per step then.

    A larger one stays where it is, memory-mapped on the host, and ``gather`` stages each batch
    through one pinned buffer per tensor (no pinned copy of the whole split: torch rounds pinned
    sizes up to a power of two, and indexing it made a pageable copy per batch anyway).
    """
    if device.type != "cuda":
        return
    size = split.images.nbytes + split.masks.nbytes
    if size < budget * torch.cuda.mem_get_info(device)[0]:
        split.images, split.masks = split.images.to(device), split.masks.to(device)
        for name, mapped in (split.maps or {}).items():  # copied whole: the host map's pages can go
            cache.release(mapped, range(len(mapped)))
    else:
        split.staging = {}


def gather(split, name: str, index, device: torch.device) -> torch.Tensor:
    """``split.<name>[index]`` (an index tensor or a slice) on ``device``.

    Where ``keep_on`` left the split on the host for a GPU, the rows are gathered from the map into
    one reused buffer (pinned where CUDA is) and copied with ``non_blocking=True``: the host gathers
    the next batch while the GPU still runs this step. Before the buffer is overwritten, the event
    recorded after the previous copy is waited on (that copy only, not the step behind it).
    """
    source = getattr(split, name)
    staging = split.staging
    if staging is None or source.device.type == device.type == "cuda":
        moved = source[index].to(device, non_blocking=True)
        if isinstance(index, slice) and moved.data_ptr() == source[index].data_ptr() and split.maps is not None:
            moved = moved.clone()  # a view into the map would fault its pages back in once released
        _release(split, name, index, source)
        return moved
    rows = len(range(*index.indices(len(source)))) if isinstance(index, slice) else len(index)
    buffer, copied = staging.get(name, (None, None))
    if copied is not None:
        copied.synchronize()
    if buffer is None or len(buffer) < rows:
        buffer = torch.empty((rows, *source.shape[1:]), dtype=source.dtype, pin_memory=torch.cuda.is_available())
    staged = buffer[:rows]
    if isinstance(index, slice):
        staged.copy_(source[index])
    else:
        torch.index_select(source, 0, index, out=staged)
    _release(split, name, index, source)
    moved = staged.to(device, non_blocking=True)
    event = None
    if device.type == "cuda":
        event = torch.cuda.Event()
        event.record()
    staging[name] = (buffer, event)
    return moved


def _release(split, name: str, index, source: torch.Tensor):
    """Once a batch is copied out of the host map, its pages leave the run's RSS: memory stays flat over an epoch."""
    maps = split.maps
    if maps is None or source.device.type != "cpu":
        return
    rows = range(*index.indices(len(source))) if isinstance(index, slice) else index.tolist()
    cache.release(maps[name], rows)


def make_optimizer(net, lr: float, weight_decay: float, device: torch.device):
    """AdamW; fused on CUDA: one kernel for all parameters instead of several per tensor."""
    return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")


# ---- the engine: one training epoch, one validation pass ---------------------------------------

def batches(order: torch.Tensor, batch: int, drop_last: bool) -> list:
    """Index tensors of each step; ``drop_last`` keeps shapes static for torch.compile."""
    stop = len(order) - len(order) % batch if drop_last and len(order) >= batch else len(order)
    return [order[start:start + batch] for start in range(0, stop, batch)]


def weight_per_label(class_weights: torch.Tensor) -> torch.Tensor:
    """Class weight per label value, 0 for the ignore label: summed weights without boolean indexing."""
    label_weight = torch.zeros(256, dtype=torch.float64, device=class_weights.device)
    label_weight[:len(CLASSES)] = class_weights.double()
    return label_weight


def train_epoch(model, split, order: torch.Tensor, *, batch: int, class_weights: torch.Tensor, optimizer,
                lr_at, step: int, precision: str, device: torch.device, augmentation: dict | None = None,
                epoch: int = 1, drop_last: bool = False, rank: int = 0, world: int = 1, progress=None) -> tuple:
    """One pass over the training frames in ``order``: returns (statistics, the next step).

    The statistics are keyed as logged under ``train/``: the mean batch loss, and rock-IoU and
    mIoU of the training batches' own predictions (a device confusion matrix, no extra pass).
    ``lr_at`` maps a step to its learning rate: the schedule is a pure function of the step.
    ``augmentation`` (``augment.draw``: the epoch's draws, one per position of ``order``) augments
    each batch on the device, images and masks together where they move together. Losses
    stay on the device until the epoch ends (no host sync per step); a NaN or inf loss is then
    refused with its epoch and step, before anything of that epoch is kept. Under torchrun each
    rank takes its share of every global batch, and the loss is normalized by the whole batch's
    summed class weights, so DDP's gradient average equals the gradient of the single-process loss.
    """
    model.train()
    losses, label_weight = [], weight_per_label(class_weights)
    confusion = torch.zeros(len(CLASSES) + 1, len(CLASSES), dtype=torch.long, device=device)
    # The order and the draws go where the frames are, once an epoch: no index crosses to the GPU per step.
    order = order.to(split.images.device)
    draws = augment.to_device(augmentation, split.images.device)
    for number, positions in enumerate(batches(torch.arange(len(order), device=order.device), batch, drop_last)):
        positions = positions.chunk(world)[rank] if world > 1 else positions
        index = order[positions]
        images = gather(split, "images", index, device)
        masks = gather(split, "masks", index, device)
        images, masks = augment.apply(images, masks, augment.batch_draws(draws, positions, number * batch, device), rank)
        masks = masks.long()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        logits = segformer.logits_at_mask_size(model, images, precision)
        if world == 1:
            loss = F.cross_entropy(logits, masks, weight=class_weights, ignore_index=IGNORE_INDEX)
            batch_loss = loss.detach()
        else:
            weight_sum = label_weight[masks].sum().float()
            dist.all_reduce(weight_sum)
            loss = F.cross_entropy(logits, masks, weight=class_weights, ignore_index=IGNORE_INDEX,
                                   reduction="sum") * world / weight_sum
            batch_loss = loss.detach() / world
            dist.all_reduce(batch_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(batch_loss)
        confusion += metrics.confusion_matrix(logits.detach().argmax(1), masks)
        step += 1
        if progress is not None:
            progress.update(len(index) * world)
    losses = torch.stack(losses)
    finite = torch.isfinite(losses)
    if not finite.all():
        first = int((~finite).nonzero()[0])
        raise Refused(f"training loss is {losses[first].item()} in epoch {epoch} at step "
                      f"{step - len(losses) + first + 1} (batch {first + 1} of the epoch); "
                      f"lower lr or check the encoder and the data")
    if world > 1:
        dist.all_reduce(confusion)
    scores = metrics.iou_summary(confusion.cpu())
    return {names.LOSS: losses.mean().item(), **{score: scores[score] for score in names.TRAIN_SCORES}}, step


@torch.no_grad()
def validate(model, split, *, batch: int, class_weights: torch.Tensor, precision: str, device: torch.device,
             static: bool = False, rank: int = 0, world: int = 1) -> dict:
    """Weighted loss and global per-class IoU over every pixel of ``split``, keyed as logged under ``val/``.

    IoU by the standard rule (255 ignored) and by the original study's (``names.STRICT_SCORES``).

    Everything accumulates on the device; the only host sync is the final ``.item()``. With
    ``static``, the last batch is padded with ignored pixels so every batch has one shape.
    Under torchrun each rank evaluates a contiguous share and the sums are all-reduced.
    """
    model.eval()
    confusion = torch.zeros(len(CLASSES) + 1, len(CLASSES), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    weight_sum = torch.zeros((), dtype=torch.float64, device=device)
    label_weight = weight_per_label(class_weights)
    per_rank = -(-split.frames // world)  # contiguous shares, so batches are slices
    first, last = min(rank * per_rank, split.frames), min((rank + 1) * per_rank, split.frames)
    for start in range(first, last, batch):
        rows = slice(start, min(start + batch, last))
        images, masks = gather(split, "images", rows, device), gather(split, "masks", rows, device).long()
        real = len(images)  # the padding below is not the split's: it stays out of the confusion matrix
        if static and real < batch:
            pad = batch - len(images)
            images = torch.cat([images, images.new_zeros((pad, *images.shape[1:]))])
            masks = torch.cat([masks, masks.new_full((pad, *masks.shape[1:]), IGNORE_INDEX)])
        logits = segformer.logits_at_mask_size(model, images, precision)
        # Summed, then divided by the summed weights once: the split's weighted mean, not a mean of means.
        loss_sum += F.cross_entropy(logits, masks, weight=class_weights, ignore_index=IGNORE_INDEX, reduction="sum")
        weight_sum += label_weight[masks].sum()
        confusion += metrics.confusion_matrix(logits[:real].argmax(1), masks[:real])
    if world > 1:
        for total in (confusion, loss_sum, weight_sum):
            dist.all_reduce(total)
    return {names.LOSS: (loss_sum / weight_sum).item(), **metrics.iou_summary(confusion.cpu())}




def peak_memory(device) -> dict:
    """torch's peak allocation since the last call, in MiB, on CUDA (a GB10's NVML reports none); nothing on a CPU.

    The one reader of CUDA's peak: the loop logs it per epoch, the benchmark per path."""
    if device.type != "cuda":
        return {}
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return {names.PEAK_MEMORY: peak}



def epoch_row(epoch: int, train_stats: dict, val: dict, lr: float, seconds: float, seen: dict | None = None) -> dict:
    """One epoch's metrics, keyed as logged (step = ``epoch``); ``seen``: what ``look`` measured, already keyed."""
    return {"epoch": epoch, **names.prefixed(names.TRAIN, train_stats), **names.prefixed(names.VAL, val),
            names.LR: lr, names.EPOCH_SECONDS: seconds, **(seen or {})}


# ---- torchrun ----------------------------------------------------------------------------------

def distributed() -> tuple:
    """(rank, world size): under torchrun, join the process group (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world


def share(value, world: int):
    """Rank 0's ``value`` on every rank."""
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]

