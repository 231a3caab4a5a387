using System.Globalization;
using System.Text;
using YamlDotNet.Serialization;

namespace Enclave.Operations.Planning;

/// <summary>
/// Inputs of the on-premises versus cloud comparison. The defaults are EXAMPLES to show the shape of the
/// calculation, not prices: replace every one with your own quotes (flags or a YAML file with these keys in snake_case).
/// </summary>
public sealed class CostInputs
{
    public double HardwareCost { get; set; } = 300_000;
    public double AmortisationYears { get; set; } = 4;
    public double PowerKw { get; set; } = 10.2;
    public double Pue { get; set; } = 1.4;
    public double ElectricityPerKwh { get; set; } = 0.12;
    public double SpacePerMonth { get; set; } = 1_000;
    public double StaffPerYear { get; set; } = 40_000;
    public double RequestsPerDay { get; set; } = 100_000;
    public double InputTokensPerRequest { get; set; } = 1_000;
    public double OutputTokensPerRequest { get; set; } = 500;
    public double CloudInputPerMillion { get; set; } = 0.55;
    public double CloudOutputPerMillion { get; set; } = 2.19;

    public sealed record Field(string Key, string Help, Action<CostInputs, double> Set);

    /// <summary>Every input, by its YAML key (flags use the same name with '-').</summary>
    public static readonly IReadOnlyList<Field> Fields =
    [
        new("hardware_cost", "servers and GPUs, purchase price", (c, v) => c.HardwareCost = v),
        new("amortisation_years", "years the hardware is written off over", (c, v) => c.AmortisationYears = v),
        new("power_kw", "average draw of the servers in kW", (c, v) => c.PowerKw = v),
        new("pue", "data-centre power usage effectiveness", (c, v) => c.Pue = v),
        new("electricity_per_kwh", "price of one kWh", (c, v) => c.ElectricityPerKwh = v),
        new("space_per_month", "rack space and cooling per month", (c, v) => c.SpacePerMonth = v),
        new("staff_per_year", "operations staff cost attributed per year", (c, v) => c.StaffPerYear = v),
        new("requests_per_day", "daily request volume", (c, v) => c.RequestsPerDay = v),
        new("input_tokens_per_request", "prompt tokens per request", (c, v) => c.InputTokensPerRequest = v),
        new("output_tokens_per_request", "completion tokens per request", (c, v) => c.OutputTokensPerRequest = v),
        new("cloud_input_per_million", "cloud price per million prompt tokens", (c, v) => c.CloudInputPerMillion = v),
        new("cloud_output_per_million", "cloud price per million completion tokens", (c, v) => c.CloudOutputPerMillion = v),
    ];

    /// <summary>Applies a YAML mapping of input keys to numbers; returns how many inputs it set.</summary>
    public int ApplyYaml(string path)
    {
        Dictionary<string, string>? values;
        try
        {
            values = new DeserializerBuilder().Build().Deserialize<Dictionary<string, string>?>(File.ReadAllText(path));
        }
        catch (YamlDotNet.Core.YamlException e)
        {
            throw new InvalidDataException($"{path}: not a YAML mapping of input names to numbers ({e.Message})", e);
        }

        var set = 0;
        foreach (var (key, text) in values ?? [])
        {
            var field = Fields.FirstOrDefault(f => f.Key == key)
                ?? throw new InvalidDataException($"{path}: unknown key '{key}' (known: {string.Join(", ", Fields.Select(f => f.Key))})");
            if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
            {
                throw new InvalidDataException($"{path}: '{key}' must be a number, not '{text}'");
            }

            field.Set(this, value);
            set++;
        }

        return set;
    }

    public void Validate()
    {
        if (AmortisationYears <= 0 || Pue < 1 || RequestsPerDay < 0 || InputTokensPerRequest < 0 || OutputTokensPerRequest < 0
            || HardwareCost < 0 || PowerKw < 0 || ElectricityPerKwh < 0 || SpacePerMonth < 0 || StaffPerYear < 0
            || CloudInputPerMillion < 0 || CloudOutputPerMillion < 0)
        {
            throw new ArgumentException("cost inputs: amortisation years must be positive, PUE at least 1, and no figure negative");
        }
    }
}

public sealed record CostResult(double OnPremPerDay, double HardwarePerDay, double EnergyPerDay, double SpacePerDay, double StaffPerDay,
    double CloudPerRequest, double CloudPerDay, double? BreakEvenRequestsPerDay, IReadOnlyList<string> Formulas)
{
    public static CostResult Compute(CostInputs c)
    {
        c.Validate();
        var hardware = c.HardwareCost / (c.AmortisationYears * 365);
        var energy = c.PowerKw * c.Pue * 24 * c.ElectricityPerKwh;
        var space = c.SpacePerMonth * 12 / 365;
        var staff = c.StaffPerYear / 365;
        var onPrem = hardware + energy + space + staff;
        var perRequest = (c.InputTokensPerRequest * c.CloudInputPerMillion + c.OutputTokensPerRequest * c.CloudOutputPerMillion) / 1e6;
        var cloud = perRequest * c.RequestsPerDay;
        double? breakEven = perRequest > 0 ? onPrem / perRequest : null;
        var f = new List<string>
        {
            Invariant($"hardware/day = hardware_cost / (amortisation_years × 365) = {c.HardwareCost} / ({c.AmortisationYears} × 365) = {hardware:F2}"),
            Invariant($"energy/day = power_kw × pue × 24 × electricity_per_kwh = {c.PowerKw} × {c.Pue} × 24 × {c.ElectricityPerKwh} = {energy:F2}"),
            Invariant($"space/day = space_per_month × 12 / 365 = {space:F2}; staff/day = staff_per_year / 365 = {staff:F2}"),
            Invariant($"on_prem/day = {onPrem:F2}"),
            Invariant($"cloud/request = (input_tokens × input_price + output_tokens × output_price) / 1e6 = ({c.InputTokensPerRequest} × {c.CloudInputPerMillion} + {c.OutputTokensPerRequest} × {c.CloudOutputPerMillion}) / 1e6 = {perRequest:F6}"),
            Invariant($"cloud/day = cloud/request × requests_per_day = {cloud:F2}"),
            breakEven is { } b ? Invariant($"break_even_requests_per_day = on_prem/day / cloud/request = {b:F0}") : "break-even: the cloud price is zero, so on-premises never breaks even",
        };
        return new CostResult(onPrem, hardware, energy, space, staff, perRequest, cloud, breakEven, f);
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    public string ToText(bool defaultsUsed)
    {
        var sb = new StringBuilder();
        if (defaultsUsed)
        {
            sb.AppendLine("EXAMPLE inputs: some figures are the built-in examples, not real prices; pass your own (see --help).");
        }

        sb.AppendLine(Invariant($"on-premises  {OnPremPerDay:F2} per day (hardware {HardwarePerDay:F2}, energy {EnergyPerDay:F2}, space {SpacePerDay:F2}, staff {StaffPerDay:F2})"));
        sb.AppendLine(Invariant($"cloud        {CloudPerDay:F2} per day ({CloudPerRequest:F6} per request)"));
        sb.AppendLine(BreakEvenRequestsPerDay is { } b
            ? Invariant($"break-even   {b:F0} requests per day; {(CloudPerDay > OnPremPerDay ? "on-premises is cheaper" : "the cloud is cheaper")} at the given volume")
            : "break-even   none (the cloud price is zero)");
        sb.AppendLine("formulas:");
        foreach (var f in Formulas)
        {
            sb.AppendLine("  " + f);
        }

        sb.AppendLine("note: on-premises capacity must cover the volume; size it with 'enclave plan' (aggregate decode bound).");
        return sb.ToString();
    }
}
