namespace Enclave.Operations.Tests.Support;

/// <summary>A test that needs the loopback PostgreSQL of .ci/install-postgres.sh; skipped, saying why, without it.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class PostgresFactAttribute : FactAttribute
{
    public const string Variable = "ENCLAVE_TEST_POSTGRES";

    public PostgresFactAttribute()
    {
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable(Variable)))
        {
            Skip = $"{Variable} is not set (run .ci/install-postgres.sh and export it)";
        }
    }
}
