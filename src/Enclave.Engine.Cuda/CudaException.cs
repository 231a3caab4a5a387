namespace Enclave.Engine.Cuda;

/// <summary>A CUDA driver, NVRTC or cuBLAS call returned an error status; the message names the call and the status.</summary>
public sealed class CudaException(string message) : Exception(message);

/// <summary>No usable GPU here: no driver, no device, or a library the backend needs is missing. The message says which.</summary>
public sealed class CudaUnavailableException(string message) : Exception(message);
