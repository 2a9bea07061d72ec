"""Presentation contexts: what the SCP accepts and what our SCU proposes.

The archive keeps every instance in the transfer syntax it arrived in (frames are
served from the stored bytes), so the SCP accepts each syntax it can store as-is and never asks a
sender to decompress. Our SCU side proposes the stored syntax of what it sends, because it never
transcodes either.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (
    _STORAGE_CLASSES,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from sqlalchemy import func, select
from sqlmodel import Session

from dicom_store.models import Instance
from dicom_store.store import Store

#: Native (uncompressed) syntaxes; pynetdicom converts between these when a peer accepts only one.
NATIVE_SYNTAXES: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

#: Encapsulated syntaxes stored as received. Listed first in what we accept: the acceptor picks the
#: first syntax of *its* list that the requestor proposed, and a sender that offers JPEG next to
#: Explicit VR Little Endian in one context (dcmtk `storescu -xy`) holds JPEG bytes — picking the native
#: syntax would make it decompress a lossy image.
ENCAPSULATED_SYNTAXES: tuple[str, ...] = (
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    JPEG2000MCLossless,
    JPEG2000MC,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
)

#: Everything the C-STORE SCP accepts. Not accepted: Explicit VR Big Endian (retired; its native frames
#: could not be served as stored), the video syntaxes (MPEG/HEVC: no video SOP classes in this archive)
#: and JPIP referenced syntaxes (pixel data lives on a JPIP server, not in the instance).
STORE_SYNTAXES: tuple[str, ...] = (*ENCAPSULATED_SYNTAXES, *NATIVE_SYNTAXES, DeflatedExplicitVRLittleEndian)

#: Every storage SOP class pynetdicom knows (170 in 3.0.4, incl. VL WSI, SEG, Bulk Annotations, 3D SR).
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(sorted(set(_STORAGE_CLASSES.values())))

FIND_SOP_CLASSES = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
MOVE_SOP_CLASSES = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove)
GET_SOP_CLASSES = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)
PATIENT_ROOT = {
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
}

#: A requestor may propose at most 128 presentation contexts per association (PS3.8 §9.3.2.2: odd
#: context IDs 1..255).
MAX_REQUESTED_CONTEXTS = 128


def scp_contexts() -> list[PresentationContext]:
    """Verification, Q/R Find/Move/Get, and every storage class with SCU and SCP roles acceptable.

    Both roles are set on the storage classes so that a C-GET requestor's SCP/SCU role selection
    (it acts as the Storage SCP on our association) is accepted; without a role selection item the
    default roles apply and we are the Storage SCP.
    """
    contexts = [build_context(Verification, list(NATIVE_SYNTAXES))]
    for uid in (*FIND_SOP_CLASSES, *MOVE_SOP_CLASSES, *GET_SOP_CLASSES):
        contexts.append(build_context(uid, list(NATIVE_SYNTAXES)))
    for uid in STORAGE_SOP_CLASSES:
        context = build_context(uid, list(STORE_SYNTAXES))
        context.scu_role = True
        context.scp_role = True
        contexts.append(context)
    return contexts


def send_contexts(pairs: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """Contexts for sending instances given as (SOP Class UID, stored transfer syntax) pairs.

    Each encapsulated syntax gets its own context (we never transcode, so the peer must take it as
    stored); native instances are offered in both native syntaxes. Raises ValueError past the
    128-context limit of one association.
    """
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    for sop_class, syntax in pairs:
        syntaxes = NATIVE_SYNTAXES if syntax in NATIVE_SYNTAXES else (syntax,)
        wanted[(sop_class, syntaxes)] = None
    if len(wanted) > MAX_REQUESTED_CONTEXTS:
        raise ValueError(
            f"{len(wanted)} (SOP class, transfer syntax) combinations exceed the {MAX_REQUESTED_CONTEXTS} "
            "presentation contexts one association can propose"
        )
    return [build_context(sop_class, list(syntaxes)) for sop_class, syntaxes in wanted]


def held_syntaxes(store: Store, sop_classes: Iterable[str]) -> dict[str, list[str]]:
    """For each SOP class, the transfer syntaxes we hold it in, most instances first."""
    classes = list(sop_classes)
    counts: dict[str, Counter[str]] = {uid: Counter() for uid in classes}
    if classes:
        statement = (
            select(Instance.sop_class_uid, Instance.transfer_syntax_uid, func.count())
            .where(Instance.sop_class_uid.in_(classes))
            .group_by(Instance.sop_class_uid, Instance.transfer_syntax_uid)
        )
        with Session(store.engine) as session:
            for sop_class, syntax, count in session.execute(statement):
                counts[sop_class][syntax] += count
    return {uid: [syntax for syntax, _ in counter.most_common()] for uid, counter in counts.items()}


def prefer_held_syntaxes(contexts: Iterable[PresentationContext], held: dict[str, list[str]]) -> None:
    """Reorder, in place, the syntaxes of contexts a C-GET requestor will receive instances on.

    One presentation context carries one transfer syntax, and dcmtk's getscu proposes each storage
    class once with several syntaxes; since we send instances as stored, the syntax to accept is the
    one we hold most of that class in (then the native ones: an encapsulated instance can still be
    decompressed for a peer that takes only native, the reverse would need a lossy encoder).
    """
    for context in contexts:
        syntaxes = held.get(str(context.abstract_syntax))
        if syntaxes is None:
            continue
        order = [*syntaxes, *NATIVE_SYNTAXES]
        current = list(context.transfer_syntax)
        context.transfer_syntax = [s for s in order if s in current] + [s for s in current if s not in order]
