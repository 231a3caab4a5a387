namespace Enclave.Knowledge.Tests.Support;

public static class RepoFiles
{
    /// <summary>The repository root: the nearest ancestor of the test binaries holding Enclave.slnx.</summary>
    public static string Root
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Enclave.slnx")))
            {
                dir = dir.Parent;
            }

            return dir?.FullName ?? throw new InvalidOperationException("Enclave.slnx not found above " + AppContext.BaseDirectory);
        }
    }
}
