"""containerd.services.tasks.v1.Tasks over the local tasks service."""

from __future__ import annotations

from google.protobuf import empty_pb2

from pycontainerd import plugin
from pycontainerd.api.services.tasks.v1 import tasks_pb2 as pb
from pycontainerd.api.types import metrics_pb2
from pycontainerd.api.types.task import task_pb2
from pycontainerd.edge import Call, Method, describe
from pycontainerd.runtime import IO, ExecOpts, UpdateOpts
from pycontainerd.services import tasks as local
from pycontainerd.wire.images import descriptor_from_pb, descriptor_to_pb
from pycontainerd.wire.mounts import list_from_pb
from pycontainerd.wire.tasks import process_to_pb, timestamp

__all__ = ["TasksAPI"]

_EMPTY = empty_pb2.Empty()


class TasksAPI:
    def __init__(self, service: local.TasksService) -> None:
        self._service = service

    def methods(self) -> list[Method]:
        return describe(
            pb.DESCRIPTOR.services_by_name["Tasks"],
            {
                "Create": self.create,
                "Start": self.start,
                "Delete": self.delete,
                "DeleteProcess": self.delete_process,
                "Get": self.get,
                "List": self.list,
                "Kill": self.kill,
                "Exec": self.exec,
                "ResizePty": self.resize_pty,
                "CloseIO": self.close_io,
                "Pause": self.pause,
                "Resume": self.resume,
                "ListPids": self.list_pids,
                "Checkpoint": self.checkpoint,
                "Update": self.update,
                "Metrics": self.metrics,
                "Wait": self.wait,
            },
        )

    async def create(self, request: pb.CreateTaskRequest, call: Call) -> pb.CreateTaskResponse:
        pid = await self._service.create(
            request.container_id,
            rootfs=list_from_pb(request.rootfs),
            io=IO(request.stdin, request.stdout, request.stderr, request.terminal),
            checkpoint=(
                descriptor_from_pb(request.checkpoint) if request.HasField("checkpoint") else None
            ),
            options=request.options if request.HasField("options") else None,
            runtime_path=request.runtime_path,
        )
        return pb.CreateTaskResponse(container_id=request.container_id, pid=pid)

    async def start(self, request: pb.StartRequest, call: Call) -> pb.StartResponse:
        return pb.StartResponse(
            pid=await self._service.start(request.container_id, request.exec_id)
        )

    async def delete(self, request: pb.DeleteTaskRequest, call: Call) -> pb.DeleteResponse:
        exit = await self._service.delete(request.container_id)
        return pb.DeleteResponse(
            pid=exit.pid, exit_status=exit.status, exited_at=timestamp(exit.exited_at)
        )

    async def delete_process(
        self, request: pb.DeleteProcessRequest, call: Call
    ) -> pb.DeleteResponse:
        exit = await self._service.delete_process(request.container_id, request.exec_id)
        return pb.DeleteResponse(
            id=request.exec_id,
            pid=exit.pid,
            exit_status=exit.status,
            exited_at=timestamp(exit.exited_at),
        )

    async def get(self, request: pb.GetRequest, call: Call) -> pb.GetResponse:
        state = await self._service.get(request.container_id, request.exec_id)
        return pb.GetResponse(process=process_to_pb(state))

    async def list(self, request: pb.ListTasksRequest, call: Call) -> pb.ListTasksResponse:
        return pb.ListTasksResponse(tasks=[process_to_pb(s) for s in await self._service.list()])

    async def kill(self, request: pb.KillRequest, call: Call) -> empty_pb2.Empty:
        await self._service.kill(
            request.container_id, request.signal, exec_id=request.exec_id, all=request.all
        )
        return _EMPTY

    async def exec(self, request: pb.ExecProcessRequest, call: Call) -> empty_pb2.Empty:
        await self._service.exec(
            request.container_id,
            request.exec_id,
            ExecOpts(
                spec=request.spec if request.HasField("spec") else None,
                io=IO(request.stdin, request.stdout, request.stderr, request.terminal),
            ),
        )
        return _EMPTY

    async def resize_pty(self, request: pb.ResizePtyRequest, call: Call) -> empty_pb2.Empty:
        await self._service.resize_pty(
            request.container_id, request.width, request.height, request.exec_id
        )
        return _EMPTY

    async def close_io(self, request: pb.CloseIORequest, call: Call) -> empty_pb2.Empty:
        await self._service.close_io(
            request.container_id, exec_id=request.exec_id, stdin=request.stdin
        )
        return _EMPTY

    async def pause(self, request: pb.PauseTaskRequest, call: Call) -> empty_pb2.Empty:
        await self._service.pause(request.container_id)
        return _EMPTY

    async def resume(self, request: pb.ResumeTaskRequest, call: Call) -> empty_pb2.Empty:
        await self._service.resume(request.container_id)
        return _EMPTY

    async def list_pids(self, request: pb.ListPidsRequest, call: Call) -> pb.ListPidsResponse:
        processes = await self._service.list_pids(request.container_id)
        return pb.ListPidsResponse(
            processes=[task_pb2.ProcessInfo(pid=p.pid, info=p.info) for p in processes]
        )

    async def checkpoint(
        self, request: pb.CheckpointTaskRequest, call: Call
    ) -> pb.CheckpointTaskResponse:
        descriptors = await self._service.checkpoint(
            request.container_id, request.options if request.HasField("options") else None
        )
        return pb.CheckpointTaskResponse(descriptors=[descriptor_to_pb(d) for d in descriptors])

    async def update(self, request: pb.UpdateTaskRequest, call: Call) -> empty_pb2.Empty:
        await self._service.update(
            request.container_id,
            UpdateOpts(
                resources=request.resources if request.HasField("resources") else None,
                annotations=dict(request.annotations),
            ),
        )
        return _EMPTY

    async def metrics(self, request: pb.MetricsRequest, call: Call) -> pb.MetricsResponse:
        metrics = await self._service.metrics(list(request.filters))
        return pb.MetricsResponse(
            metrics=[
                metrics_pb2.Metric(timestamp=timestamp(m.timestamp), id=m.id, data=m.data)
                for m in metrics
            ]
        )

    async def wait(self, request: pb.WaitRequest, call: Call) -> pb.WaitResponse:
        exit = await self._service.wait(request.container_id, request.exec_id)
        return pb.WaitResponse(exit_status=exit.status, exited_at=timestamp(exit.exited_at))


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="tasks",
        init=lambda ctx: TasksAPI(ctx.plugins.get_by_id(plugin.PluginType.SERVICE, local.ID)),
        requires=(plugin.PluginType.SERVICE,),
    )
)
