"""containerd's API services as edge methods: protobuf in, the local
service, protobuf out.  One module per service, each registering an
``io.containerd.grpc.v1`` plugin whose instance has ``methods()``; no logic
and no events here (those are the local services')."""
